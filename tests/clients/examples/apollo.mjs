// Apollo Client 4: queries and mutations over HTTP, subscriptions over graphql-ws.
import { ApolloClient, HttpLink, InMemoryCache, split } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { isSubscriptionOperation, relayStylePagination } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";

export function makeApolloClient({ httpUrl, wsUrl, token, tenantId, ...wsOptions }) {
  const headers = { Authorization: `Bearer ${token}` };
  if (tenantId) headers["X-Tenant-Id"] = tenantId; // SUPER_ADMIN only
  const ws = createClient({
    url: wsUrl, // wss://gateway.example/graphql
    connectionParams: headers, // the token travels in connection_init
    shouldRetry: (event) => !(event && event.code === 4403), // a refused token: stop
    ...wsOptions,
  });
  return new ApolloClient({
    link: split(
      ({ query }) => isSubscriptionOperation(query),
      new GraphQLWsLink(ws),
      new HttpLink({ uri: httpUrl, headers }), // https://gateway.example/graphql
    ),
    cache: new InMemoryCache({
      // Customer, LifecycleStatus, LifecycleStageConfig and Viewer carry an `id`: the
      // default normalisation is right. Only the paginated list needs a policy.
      typePolicies: {
        Query: { fields: { customers: relayStylePagination(["filter", "orderBy"]) } },
      },
    }),
  });
}
