// The address is the state: /app/?stage=At-Risk, /app/?customer=<id>, /app/?view=admin.
import { useEffect, useState } from "preact/hooks";

export type Params = Record<string, string>;

const read = (): Params => Object.fromEntries(new URLSearchParams(location.search));
const listeners = new Set<() => void>();

export function navigate(params: Params, replace = false): void {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  const url = location.pathname + (q ? `?${q}` : "");
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  listeners.forEach((l) => l());
}

export function useParams(): Params {
  const [params, set] = useState(read);
  useEffect(() => {
    const on = () => set(read());
    listeners.add(on);
    addEventListener("popstate", on);
    return () => {
      listeners.delete(on);
      removeEventListener("popstate", on);
    };
  }, []);
  return params;
}

export const href = (params: Params): string => {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  return location.pathname + (q ? `?${q}` : "");
};

/** Same-page navigation for plain links (keeps middle-click and "open in new tab"). */
export function follow(e: MouseEvent, params: Params): void {
  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(params);
  scrollTo(0, 0);
}
