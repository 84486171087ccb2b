/* GraphiQL bootstrap (kept out of index.html so no inline script is needed under CSP).
 *
 * - Nothing is sent until the Headers tab holds a real bearer token: no 401 for the
 *   placeholder. Once it does (or it changes), the fetcher changes and GraphiQL fetches the
 *   schema again (docs, autocomplete) without a click on Re-fetch.
 * - The headers (the token) are kept in sessionStorage: this tab only, gone when it closes.
 *   What GraphiQL keeps in localStorage (tabs, history) has its headers removed.
 */
(function () {
  'use strict';

  var HEADERS_KEY = 'graphiql:headers';
  var DEFAULT_HEADERS = '{\n  "Authorization": "Bearer <paste a token from c360 dev>"\n}';
  var DEFAULT_QUERY =
    '{ viewer { subject tenantId permissions } lifecycleSummary { total stages { stage count } } }\n';
  var BEARER = /^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

  // What localStorage may keep of a value: its `headers` (in tabs, in the history) nulled.
  function scrubbed(value) {
    try {
      var doc = JSON.parse(value);
      (function walk(node) {
        if (!node || typeof node !== 'object') return;
        if (Object.prototype.hasOwnProperty.call(node, 'headers')) node.headers = null;
        Object.keys(node).forEach(function (k) { walk(node[k]); });
      })(doc);
      return JSON.stringify(doc);
    } catch (e) {
      return value; // not JSON: holds no headers
    }
  }
  // This tab's sessionStorage holds everything; localStorage everything but the headers.
  var storage = {
    getItem: function (key) {
      var here = window.sessionStorage.getItem(key);
      return here !== null || key === HEADERS_KEY ? here : window.localStorage.getItem(key);
    },
    setItem: function (key, value) {
      window.sessionStorage.setItem(key, value);
      if (key === HEADERS_KEY) return;
      window.localStorage.setItem(key, scrubbed(value));
    },
    removeItem: function (key) {
      window.sessionStorage.removeItem(key);
      window.localStorage.removeItem(key);
    },
    clear: function () {
      [window.localStorage, window.sessionStorage].forEach(function (s) {
        Object.keys(s).forEach(function (k) { if (k.indexOf('graphiql:') === 0) s.removeItem(k); });
      });
    },
    get length() { return window.localStorage.length; }
  };
  // Left by an older version of this page, which kept the token in localStorage.
  window.localStorage.removeItem(HEADERS_KEY);
  Object.keys(window.localStorage).forEach(function (k) {
    if (k.indexOf('graphiql:') === 0) window.localStorage.setItem(k, scrubbed(window.localStorage.getItem(k)));
  });

  // The editor's headers when they carry a usable token (an object), else null.
  function usable(text) {
    try {
      var h = JSON.parse(text || '{}');
      var auth = h && (h.Authorization || h.authorization);
      return typeof auth === 'string' && BEARER.test(auth.trim()) ? h : null;
    } catch (e) {
      return null;
    }
  }

  var wsScheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  function makeFetcher(headers) {
    if (!headers) {
      return function () {
        return Promise.resolve({
          errors: [{ message: 'Paste a token into the Headers tab: {"Authorization": "Bearer eyJ..."}' }]
        });
      };
    }
    // graphql-ws gets the headers as its connection_init payload.
    return GraphiQL.createFetcher({
      url: location.origin + '/graphql',
      subscriptionUrl: wsScheme + location.host + '/graphql',
      headers: headers,
      wsConnectionParams: headers
    });
  }

  function App() {
    var initial = storage.getItem(HEADERS_KEY);
    var state = React.useState(JSON.stringify(usable(initial || DEFAULT_HEADERS)));
    var key = state[0];
    var setKey = state[1];
    var fetcher = React.useMemo(function () { return makeFetcher(JSON.parse(key)); }, [key]);
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      defaultHeaders: DEFAULT_HEADERS,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      storage: storage,
      defaultEditorToolsVisibility: 'headers',
      onEditHeaders: function (text) { setKey(JSON.stringify(usable(text))); }
    });
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(React.createElement(App));
})();
