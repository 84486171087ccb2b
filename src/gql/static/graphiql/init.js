/* GraphiQL bootstrap (kept out of index.html so no inline script is needed under CSP). */
(function () {
  'use strict';

  var HEADERS_STORAGE_KEY = 'graphiql:headers'; // written by GraphiQL when shouldPersistHeaders is true

  var DEFAULT_HEADERS = '{\n  "Authorization": "Bearer <paste a token from c360 dev>"\n}';

  var DEFAULT_QUERY =
    '{ viewer { subject tenantId permissions } lifecycleSummary { total stages { stage count } } }\n';

  // Current content of GraphiQL's Headers editor, as an object ({} when empty or not valid JSON).
  function readEditorHeaders() {
    try {
      var raw = window.localStorage.getItem(HEADERS_STORAGE_KEY);
      if (!raw) return {};
      var parsed = JSON.parse(raw);
      return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : {};
    } catch (e) {
      return {};
    }
  }

  // graphql-transport-ws connection_init payload: e.g. {"Authorization": "Bearer ...", "X-Tenant-Id": "..."}
  function wsConnectionParams() {
    return readEditorHeaders();
  }

  var wsScheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  var fetcherOptions = {
    url: location.origin + '/graphql',
    subscriptionUrl: wsScheme + location.host + '/graphql'
  };

  // GraphiQL's createFetcher spreads `wsConnectionParams` as a plain object (a function would be
  // ignored), and opens a new graphql-ws client per subscription with
  // connectionParams = {...wsConnectionParams, ...headersFromEditor}. Building the fetcher per
  // call keeps wsConnectionParams in sync with the Headers editor. HTTP requests get the editor
  // headers from GraphiQL itself (fetcherOpts.headers).
  function fetcher(graphQLParams, fetcherOpts) {
    var f = GraphiQL.createFetcher({
      url: fetcherOptions.url,
      subscriptionUrl: fetcherOptions.subscriptionUrl,
      wsConnectionParams: wsConnectionParams()
    });
    return f(graphQLParams, fetcherOpts);
  }

  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: 'headers'
    })
  );
})();
