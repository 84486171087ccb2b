// A live list that misses nothing across reconnects, on graphql-ws (what Apollo's
// GraphQLWsLink and urql's subscriptionExchange use underneath).
//
// graphql-ws re-sends a subscription's ORIGINAL subscribe message when it reconnects, so
// `after` would not advance by itself: on every reconnection, subscribe again with the
// cursor of the last event seen, and the gateway replays what was missed first.
import { createClient } from "graphql-ws";

const LIFECYCLE_CHANGED = `
  subscription Live($stage: String, $customerId: ID, $after: String) {
    lifecycleChanged(stage: $stage, customerId: $customerId, after: $after) {
      entered cursor
      customer { id name lifecycle { id stage enteredAt version } }
      transition { id fromStage toStage changedAt changedBy source }
    }
  }
`;

export function liveLifecycle({ url, token, variables, onChange, onError, ...options }) {
  let last = null; // the cursor of the last event seen
  let stop = () => {};
  const client = createClient({
    url, // wss://gateway.example/graphql
    connectionParams: { Authorization: `Bearer ${token}` },
    // A refused token (4403) will not get better by retrying; anything else may.
    shouldRetry: (event) => !(event && event.code === 4403),
    retryAttempts: Infinity,
    ...options,
  });
  const subscribe = () => {
    stop();
    stop = client.subscribe(
      { query: LIFECYCLE_CHANGED, variables: { ...variables, after: last } },
      {
        next: ({ data, errors }) => {
          if (errors) onError?.(errors);
          if (data) {
            last = data.lifecycleChanged.cursor;
            onChange(data.lifecycleChanged);
          }
        },
        error: (error) => onError?.(error),
        complete: () => {},
      },
    );
  };
  client.on("connected", (_socket, _payload, wasRetry) => wasRetry && subscribe());
  subscribe();
  return () => {
    stop();
    client.dispose();
  };
}
