// Drives examples/live-list.mjs as a front end would, printing one JSON line per thing seen:
// {"connected": n}, {"closed": code}, {"change": {...}}. Env: C360_URL, TOKEN, CUSTOMER.
import WebSocket from "ws";
import { liveLifecycle } from "./examples/live-list.mjs";

const { C360_URL, TOKEN, CUSTOMER } = process.env;
const say = (thing) => process.stdout.write(JSON.stringify(thing) + "\n");
let connections = 0;
liveLifecycle({
  url: C360_URL.replace(/^http/, "ws") + "/graphql",
  token: TOKEN,
  variables: { customerId: CUSTOMER },
  onChange: (e) => say({ change: { id: e.transition.id, to: e.transition.toStage } }),
  onError: (error) => say({ error: String(error && error.message ? error.message : JSON.stringify(error)) }),
  webSocketImpl: WebSocket,
  retryWait: () => new Promise((resolve) => setTimeout(resolve, 300)),
  on: {
    connected: () => say({ connected: ++connections }),
    closed: (event) => say({ closed: event.code }),
  },
});
setTimeout(() => process.exit(0), Number(process.env.LIFETIME_MS || 60000));
