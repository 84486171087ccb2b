// Live lifecycle changes that miss nothing across reconnects.
//
// graphql-ws re-sends a subscription's ORIGINAL subscribe message when it reconnects, so
// `after` would not advance by itself: on every reconnection, subscribe again with the cursor
// of the last event seen, and the gateway replays what was missed first.
import type { Client as WsClient } from "graphql-ws";
import type { ChangeEvent } from "./types";

const LIFECYCLE_CHANGED = `
  subscription Live($stage: String, $customerId: ID, $after: String) {
    lifecycleChanged(stage: $stage, customerId: $customerId, after: $after) {
      entered cursor
      customer {
        id name companyName email tier tags assignedTo createdAt updatedAt
        lifecycle { id stage enteredAt updatedBy version }
      }
      transition { id fromStage toStage changedAt changedBy source reasonCode }
    }
  }
`;

export interface LiveVars {
  stage?: string | null;
  customerId?: string | null;
}

export function live(
  ws: WsClient,
  variables: LiveVars,
  onEvent: (e: ChangeEvent) => void,
  onError?: (e: unknown) => void,
  onGap?: () => void,
  // lifecyclePosition read before the data this list shows: nothing committed after it is
  // missed, not even before the first event arrives
  after: string | null = null,
): () => void {
  let last: string | null = after;
  let stop = () => {};
  const seen = new Set<string>();
  const subscribe = () => {
    stop();
    stop = ws.subscribe<{ lifecycleChanged: ChangeEvent }>(
      { query: LIFECYCLE_CHANGED, variables: { ...variables, after: last } },
      {
        next: ({ data, errors }) => {
          if (errors) onError?.(errors);
          if (!data) return;
          const e = data.lifecycleChanged;
          last = e.cursor;
          if (seen.has(e.transition.id)) return; // a replay already delivered
          seen.add(e.transition.id);
          onEvent(e);
        },
        error: (err) => onError?.(err),
        complete: () => {},
      },
    );
  };
  const off = ws.on("connected", (_socket, _payload, wasRetry) => {
    if (!wasRetry) return;
    // Without a cursor there is nothing to resume from: the caller reloads instead.
    if (last === null) onGap?.();
    subscribe();
  });
  subscribe();
  return () => {
    off();
    stop();
  };
}
