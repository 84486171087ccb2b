// Apollo Client and urql's graphcache, with their default caches, through the README's flows:
// a watched customer, the README's mutation payload, a saved stage configuration.
// Env: C360_URL, TOKEN (account manager), ADMIN_TOKEN (tenant admin), CUSTOMER (an id in
// Prospect). Prints one JSON object: what each client warned and what its watchers saw.
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { Client, fetchExchange } from "@urql/core";
import { cacheExchange } from "@urql/exchange-graphcache";

const { C360_URL, TOKEN, ADMIN_TOKEN, CUSTOMER } = process.env;
const warnings = [];
for (const level of ["warn", "error"]) {
  console[level] = (...args) => warnings.push(args.map(String).join(" "));
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

const CUSTOMER_Q = gql`
  query Customer($id: ID!) {
    customer(id: $id) { id name lifecycle { id stage version allowedNextStages } }
  }
`;
// The README's mutation payload: customer { lifecycle { stage version } }
const MOVE = gql`
  mutation Move($id: ID!, $stage: String!) {
    updateLifecycleStage(input: { customerId: $id, stage: $stage }) {
      success
      customer { id lifecycle { id stage version } }
    }
  }
`;
const CONFIG_Q = gql`{ lifecycleStageConfig { id version stages } }`;
const CONFIGURE = gql`
  mutation Configure($input: LifecycleStageConfigInput!) {
    configureLifecycleStages(input: $input) { id version stages }
  }
`;
const STAGES = ["Prospect", "Onboarded", "Active", "At-Risk", "Churned"];

function counted(token) {
  const calls = { n: 0 };
  const fetchCounting = (url, init) => {
    calls.n += 1;
    return fetch(url, init);
  };
  return { calls, uri: `${C360_URL}/graphql`, headers: { authorization: `Bearer ${token}` }, fetch: fetchCounting };
}

async function apollo() {
  const am = counted(TOKEN);
  const client = new ApolloClient({ link: new HttpLink(am), cache: new InMemoryCache() });
  const seen = [];
  const watched = client.watchQuery({ query: CUSTOMER_Q, variables: { id: CUSTOMER } });
  const sub = watched.subscribe({ next: (r) => r.data && seen.push(r.data.customer.lifecycle) });
  await settle();
  await client.mutate({ mutation: MOVE, variables: { id: CUSTOMER, stage: "Onboarded" } });
  await settle();
  sub.unsubscribe();

  const admin = counted(ADMIN_TOKEN);
  const adminClient = new ApolloClient({ link: new HttpLink(admin), cache: new InMemoryCache() });
  const configs = [];
  const config = adminClient.watchQuery({ query: CONFIG_Q });
  const configSub = config.subscribe({ next: (r) => r.data && configs.push(r.data.lifecycleStageConfig) });
  await settle();
  const before = admin.calls.n;
  await adminClient.mutate({
    mutation: CONFIGURE,
    variables: { input: { stages: [...STAGES, "Dormant"] } },
  });
  await settle();
  configSub.unsubscribe();
  return { lifecycles: seen, configs, configRequests: admin.calls.n - before };
}

async function urql() {
  const make = (token) => {
    const c = counted(token);
    return new Client({
      url: c.uri,
      fetch: c.fetch,
      fetchOptions: { headers: c.headers },
      exchanges: [cacheExchange(), fetchExchange],
    });
  };
  const client = make(TOKEN);
  const seen = [];
  const { unsubscribe } = client
    .query(CUSTOMER_Q, { id: CUSTOMER })
    .subscribe((r) => r.data && seen.push(r.data.customer.lifecycle));
  await settle();
  await client.mutation(MOVE, { id: CUSTOMER, stage: "Active" }).toPromise();
  await settle();
  unsubscribe();
  const admin = make(ADMIN_TOKEN);
  const configs = [];
  const watching = admin.query(CONFIG_Q, {}).subscribe((r) => r.data && configs.push(r.data.lifecycleStageConfig));
  await settle();
  await admin
    .mutation(CONFIGURE, { input: { stages: [...STAGES, "Dormant", "Paused"] } })
    .toPromise();
  await settle();
  watching.unsubscribe();
  return { lifecycles: seen, configs };
}

const out = { apollo: await apollo(), urql: await urql() };
out.warnings = warnings;
process.stdout.write(JSON.stringify(out) + "\n");
