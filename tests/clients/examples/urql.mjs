// urql 6 with graphcache: queries and mutations over HTTP, subscriptions over graphql-ws.
import { Client, fetchExchange, subscriptionExchange } from "@urql/core";
import { cacheExchange } from "@urql/exchange-graphcache";
import { relayPagination } from "@urql/exchange-graphcache/extras";
import { createClient } from "graphql-ws";

export function makeUrqlClient({ httpUrl, wsUrl, token, ...wsOptions }) {
  const headers = { Authorization: `Bearer ${token}` };
  const ws = createClient({
    url: wsUrl,
    connectionParams: headers,
    shouldRetry: (event) => !(event && event.code === 4403),
    ...wsOptions,
  });
  return new Client({
    url: httpUrl,
    fetchOptions: { headers },
    exchanges: [
      cacheExchange({ resolvers: { Query: { customers: relayPagination() } } }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription: (request) => ({
          subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query || "" }, sink) }),
        }),
      }),
    ],
  });
}
