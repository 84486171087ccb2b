import { createContext } from "preact";
import { useContext, useEffect, useState } from "preact/hooks";
import type { Gateway, LinkState } from "./api";
import type { StageConfig, Viewer } from "./types";

export interface Session {
  gw: Gateway;
  viewer: Viewer;
  config: StageConfig;
  reloadConfig(): Promise<void>;
  signOut(): void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("no session");
  return s;
}

export const can = (v: Viewer, p: string): boolean => v.permissions.includes(p);

export function useLink(gw: Gateway): LinkState {
  const [state, set] = useState(gw.link.state);
  useEffect(() => {
    gw.link.listeners.add(set);
    set(gw.link.state); // a change between the first render and now is not lost
    return () => void gw.link.listeners.delete(set);
  }, [gw]);
  return state;
}
