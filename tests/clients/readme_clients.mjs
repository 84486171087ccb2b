// Runs the README's client setups (examples/*.mjs, quoted there verbatim): each one queries,
// pages, mutates and receives the change live. Env: C360_URL, TOKEN, CUSTOMER (in Prospect).
// Prints {"apollo": {...}, "urql": {...}}.
import { gql } from "@apollo/client";
import WebSocket from "ws";
import { makeApolloClient } from "./examples/apollo.mjs";
import { makeUrqlClient } from "./examples/urql.mjs";

const { C360_URL, TOKEN, CUSTOMER } = process.env;
const urls = { httpUrl: `${C360_URL}/graphql`, wsUrl: `${C360_URL.replace(/^http/, "ws")}/graphql` };
const LIST = gql`
  query List($after: String) {
    customers(first: 1, after: $after, orderBy: NAME_ASC) {
      pageInfo { hasNextPage endCursor }
      edges { node { id name lifecycle { id stage } } }
    }
  }
`;
const LIVE = gql`
  subscription Live($id: ID) {
    lifecycleChanged(customerId: $id) { cursor transition { toStage } }
  }
`;
const MOVE = gql`
  mutation Move($id: ID!, $stage: String!) {
    updateLifecycleStage(input: { customerId: $id, stage: $stage }) {
      success customer { id lifecycle { id stage version allowedNextStages } }
    }
  }
`;
const settle = (ms = 500) => new Promise((resolve) => setTimeout(resolve, ms));

async function apollo() {
  const client = makeApolloClient({ ...urls, token: TOKEN, webSocketImpl: WebSocket });
  const live = [];
  const sub = client.subscribe({ query: LIVE, variables: { id: CUSTOMER } })
    .subscribe({ next: ({ data }) => live.push(data.lifecycleChanged.transition.toStage) });
  await settle();
  const list = client.watchQuery({ query: LIST });
  const first = await list.refetch();
  await list.fetchMore({ variables: { after: first.data.customers.pageInfo.endCursor } });
  const pages = list.getCurrentResult().data.customers.edges.length;
  await client.mutate({ mutation: MOVE, variables: { id: CUSTOMER, stage: "Onboarded" } });
  await settle();
  sub.unsubscribe();
  client.stop();
  return { pages, live };
}

async function urql() {
  const client = makeUrqlClient({ ...urls, token: TOKEN, webSocketImpl: WebSocket });
  const live = [];
  const sub = client.subscription(LIVE, { id: CUSTOMER })
    .subscribe(({ data }) => data && live.push(data.lifecycleChanged.transition.toStage));
  await settle();
  const first = await client.query(LIST, {}).toPromise();
  const more = await client.query(LIST, { after: first.data.customers.pageInfo.endCursor }).toPromise();
  const moved = await client.mutation(MOVE, { id: CUSTOMER, stage: "Active" }).toPromise();
  await settle();
  sub.unsubscribe();
  return { pages: more.data.customers.edges.length, live, error: moved.error ? String(moved.error) : null };
}

const out = { apollo: await apollo(), urql: await urql() };
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
