import { type Problem, describe } from "./api";

export function Notice({ problem, onRetry }: { problem: Problem | null; onRetry?: () => void }) {
  if (!problem) return null;
  return (
    <div class={`notice ${problem.code === "CONFLICT" ? "warn" : "error"}`} role="alert">
      <strong>{title(problem.code)}</strong> {describe(problem)}
      {onRetry && (
        <button type="button" class="link" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

function title(code: string): string {
  return (
    {
      RATE_LIMITED: "Rate limited.",
      FORBIDDEN: "Not allowed.",
      NETWORK: "Offline.",
      UNAUTHENTICATED: "Signed out.",
      CONFLICT: "Changed by someone else.",
      BAD_USER_INPUT: "Not accepted.",
      NOT_FOUND: "Not found.",
    }[code] || "Error."
  );
}
