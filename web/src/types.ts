export type Tier = "FREE" | "BASIC" | "PRO" | "ENTERPRISE";
export type Order = "STAGE_ENTERED_AT_DESC" | "NAME_ASC" | "UPDATED_AT_DESC" | "CREATED_AT_DESC";

export interface Lifecycle {
  id: string;
  stage: string;
  enteredAt: string;
  updatedBy: string;
  version: number;
}

export interface Row {
  id: string;
  name: string;
  companyName: string | null;
  email?: string | null;
  tier: Tier | null;
  tags: string[];
  assignedTo: string | null;
  createdAt: string;
  updatedAt: string;
  lifecycle: Lifecycle;
}

export interface Transition {
  id: string;
  fromStage: string | null;
  toStage: string;
  changedAt: string;
  changedBy: string;
  source: string;
  reasonCode: string | null;
}

export interface ChangeEvent {
  entered: boolean;
  cursor: string;
  customer: Row;
  transition: Transition;
}

export interface Viewer {
  id: string;
  subject: string;
  tenantId: string;
  roles: string[];
  permissions: string[];
}

export interface StageConfig {
  id: string;
  stages: string[];
  requiredReasonCodes: string[];
  transitions: { from: string; to: string[] }[];
  initialStage: string;
  eventRules: { eventType: string; toStage: string }[];
  version: number;
  updatedAt: string | null;
  updatedBy: string | null;
}
