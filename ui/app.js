// larder's web interface. The server renders each collection's page whole (browsing and
// downloading need no script); this makes it interactive: sorting and filtering in place,
// previews, uploads with progress, new folders, deletion, buying, sign-in and the account
// panel. Every change goes through larder's HTTP API, so its answers (402, 409, 412) are
// shown as messages. No name is ever inserted as HTML: only textContent and attributes.
'use strict';

(() => {
  const body = document.body;
  const here = body.dataset.path || '/';
  const account = body.dataset.account || '';
  const canWrite = body.dataset.canWrite === 'true';
  const $ = (id) => document.getElementById(id);
  const table = $('listing');

  // ---- The token: a short-lived bearer token kept in a cookie that larder honours for
  // reads only (links, previews, reloads); writes send it as Authorization.
  const COOKIE = 'larder-token';
  const SESSION = 8 * 3600;

  function token() {
    for (const part of document.cookie.split(';')) {
      const at = part.indexOf('=');
      if (at > 0 && part.slice(0, at).trim() === COOKIE) return part.slice(at + 1).trim();
    }
    return '';
  }

  function keepToken(value, seconds) {
    const secure = location.protocol === 'https:' ? '; Secure' : '';
    document.cookie = `${COOKIE}=${value}; Path=/; Max-Age=${seconds}; SameSite=Strict${secure}`;
  }

  function forgetToken() {
    document.cookie = `${COOKIE}=; Path=/; Max-Age=0; SameSite=Strict`;
  }

  function authorize(headers) {
    const secret = token();
    if (secret && !headers.has('Authorization')) headers.set('Authorization', `Bearer ${secret}`);
    return headers;
  }

  // Fetch options that carry `headers`. A request with its own Authorization leaves the
  // browser's credentials out: a 401 then comes back to the page instead of opening the
  // browser's sign-in prompt (Fetch §4.5: only credentialed requests prompt). Without one, a
  // browser signed in with Basic (no token) still sends what it remembers.
  function init(method, headers, payload) {
    const credentials = headers.has('Authorization') ? 'omit' : 'same-origin';
    return { method, headers, body: payload, credentials };
  }

  // Calls larder; resolves to { status, doc, response } (doc: the JSON body, if any).
  async function api(method, url, options = {}) {
    const headers = authorize(new Headers(options.headers || {}));
    if (!headers.has('Accept')) headers.set('Accept', 'application/json');
    let payload = options.body;
    if (options.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      payload = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(url, init(method, headers, payload));
    } catch (error) {
      return { status: 0, doc: null, response: null };
    }
    let doc = null;
    if ((response.headers.get('Content-Type') || '').includes('json')) {
      doc = await response.json().catch(() => null);
    }
    return { status: response.status, doc, response };
  }

  // ---- Words.
  function size(bytes) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = Number(bytes) || 0;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function credits(n) {
    return `${n} credit${Number(n) === 1 ? '' : 's'}`;
  }

  // What an error answer means for `what` (a name), in words a person can act on.
  function explain(status, doc, what) {
    const p = doc || {};
    const slug = String(p.type || '').split('/').pop();
    switch (slug) {
      case 'quota-exceeded': {
        const left = Math.max(0, (p.quota || 0) - (p.used || 0));
        return `Not enough storage for ${what}: it needs ${size(p.needed)} and only ` +
          `${size(left)} of your ${size(p.quota)} (plan ${p.plan}) is left. Nothing was stored. ` +
          'Delete something, or ask for a bigger plan.';
      }
      case 'payment-required':
        return `${what} costs ${credits(p.price)}; your balance is ${credits(p.balance)}. ` +
          'Buy it to open it.';
      case 'insufficient-credits':
        return `Not enough credits: ${what} costs ${credits(p.price)} and your balance is ` +
          `${credits(p.balance)}. Nothing was charged.`;
      case 'precondition-failed':
        return `${what} has changed since this page was shown. Reload and try again.`;
      case 'conflict':
        return `${what}: ${p.detail || 'this conflicts with what is there.'}`;
      case 'unauthenticated':
        return `Sign in to do this with ${what}.`;
      case 'forbidden':
        return `Your account may not do this with ${what} here.`;
      case 'not-found':
        return `${what} is not there any more.`;
      case 'content-too-large':
        return `${what} is larger than this server accepts.`;
      case 'too-many-requests':
        return 'Too many failed sign-ins. Wait a little, then try again.';
      case 'insufficient-storage':
        return `The server's disk is full; ${what} was not stored.`;
      default:
        break;
    }
    if (status === 0) return `The server could not be reached; ${what} was not changed.`;
    if (p.title) return `${what}: ${p.title}. ${p.detail || ''}`.trim();
    return `${what}: the server answered ${status}.`;
  }

  function say(text, failed) {
    const status = $('status');
    status.textContent = text;
    status.classList.toggle('error', Boolean(failed));
  }

  // ---- Dialogs: [data-close] closes its dialog; `ask` is a confirm or a prompt.
  for (const button of document.querySelectorAll('dialog [data-close]')) {
    button.addEventListener('click', () => button.closest('dialog').close(''));
  }

  function ask({ title, text, yes, label, value, danger }) {
    const dialog = $('ask');
    const input = $('ask-input');
    const prompt = label !== undefined;
    $('ask-title').textContent = title;
    $('ask-text').textContent = text || '';
    $('ask-yes').textContent = yes || '';
    $('ask-yes').hidden = !yes;
    $('ask-yes').classList.toggle('danger', Boolean(danger));
    $('ask-error').textContent = '';
    $('ask-field').hidden = !prompt;
    input.required = prompt;
    $('ask-label').textContent = label || '';
    input.value = value || '';
    dialog.returnValue = '';
    dialog.showModal();
    if (prompt) input.focus();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        const agreed = dialog.returnValue === 'yes';
        resolve(agreed ? (prompt ? input.value : true) : null);
      }, { once: true });
    });
  }

  // ---- Header: who is signed in. The server read the page with the cookie: if it saw no
  // account, the token has expired or was revoked, so forget it.
  const signIn = $('sign-in');
  if (!account && token()) forgetToken();
  if (account) {
    $('account-button').hidden = false;
    $('sign-out-button').hidden = !token();
  } else {
    $('sign-in-button').hidden = false;
  }
  $('sign-in-button').addEventListener('click', () => openSignIn());

  function openSignIn() {
    $('sign-in-error').textContent = '';
    signIn.showModal();
    $('sign-in-name').focus();
  }

  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = $('sign-in-name').value;
    const password = $('sign-in-password');
    const bytes = new TextEncoder().encode(`${name}:${password.value}`);
    const basic = `Basic ${btoa(String.fromCharCode(...bytes))}`;
    password.value = '';
    $('sign-in-submit').disabled = true;
    const answer = await api('POST', '/.larder/tokens', {
      json: { expires_in: SESSION },
      headers: { Authorization: basic },
    });
    $('sign-in-submit').disabled = false;
    if (answer.status === 201) {
      const until = Date.parse(answer.doc.expires_at);
      const seconds = Number.isNaN(until) ? SESSION : Math.floor((until - Date.now()) / 1000);
      keepToken(answer.doc.token, Math.max(60, seconds));
      location.reload();
    } else if (answer.status === 401) {
      $('sign-in-error').textContent = 'That account name and password do not match.';
      password.focus();
    } else if (answer.status === 429) {
      const wait = answer.response.headers.get('Retry-After') || 'a few';
      $('sign-in-error').textContent =
        `Too many failed sign-ins. Try again in ${wait} seconds.`;
    } else {
      $('sign-in-error').textContent = explain(answer.status, answer.doc, 'Signing in');
    }
  });

  $('sign-out-button').addEventListener('click', async () => {
    const me = await api('GET', '/.larder/account');
    if (me.status === 200 && me.doc.token) {
      await api('DELETE', `/.larder/tokens/${encodeURIComponent(me.doc.token.id)}`);
    }
    forgetToken();
    location.reload();
  });

  // ---- The account panel.
  const panel = $('account');
  let myToken = '';
  $('account-button').addEventListener('click', async () => {
    $('account-error').textContent = '';
    $('token-secret').hidden = true;
    const ok = await showAccount();
    if (ok) panel.showModal();
  });

  async function showAccount() {
    const answer = await api('GET', '/.larder/account');
    if (answer.status !== 200) {
      if (answer.status === 401 && token()) {
        forgetToken();
        say('Your session has ended. Sign in again.', true);
        location.reload();
      } else {
        say(explain(answer.status, answer.doc, 'Your account'), true);
      }
      return false;
    }
    const me = answer.doc;
    myToken = me.token ? me.token.id : '';
    $('account-name').textContent = me.name + (me.admin ? ' (admin)' : '');
    $('account-plan').textContent = me.plan || 'none';
    $('account-balance').textContent = credits(me.balance);
    const { used, quota } = me.storage;
    const meter = $('account-meter');
    meter.max = quota || Math.max(used, 1);
    meter.value = used;
    meter.high = (quota || 0) * 0.9 || meter.max;
    $('account-storage').textContent = quota
      ? `${size(used)} of ${size(quota)} used (${Math.round((100 * used) / quota)}%)`
      : `${size(used)} used, no limit`;
    await showTokens();
    return true;
  }

  async function showTokens() {
    const answer = await api('GET', '/.larder/tokens');
    const rows = $('token-rows');
    rows.replaceChildren();
    for (const t of (answer.doc && answer.doc.tokens) || []) {
      const row = rows.insertRow();
      row.insertCell().textContent = t.scope;
      row.insertCell().textContent = t.read_only ? 'read only' : 'read and write';
      const expires = t.expires_at ? t.expires_at.replace('T', ' ').replace('Z', ' UTC') : 'never';
      row.insertCell().textContent = t.expired ? `${expires} (expired)` : expires;
      const cell = row.insertCell();
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'small';
      const mine = t.id === myToken;
      button.textContent = mine ? 'Revoke (signs out)' : 'Revoke';
      button.setAttribute('aria-label', `Revoke the token for ${t.scope}, expiring ${expires}` +
        (mine ? ', which this browser uses' : ''));
      button.addEventListener('click', async () => {
        const gone = await api('DELETE', `/.larder/tokens/${encodeURIComponent(t.id)}`);
        if (gone.status !== 204) {
          $('account-error').textContent = explain(gone.status, gone.doc, 'The token');
          return;
        }
        if (mine) {
          forgetToken();
          location.reload();
          return;
        }
        await showTokens();
      });
      cell.append(button);
    }
  }

  $('token-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const request = { scope: $('token-scope').value || '/', read_only: $('token-read-only').checked };
    if ($('token-expires').value) request.expires_in = $('token-expires').value;
    const answer = await api('POST', '/.larder/tokens', { json: request });
    if (answer.status !== 201) {
      $('account-error').textContent = explain(answer.status, answer.doc, 'The new token');
      return;
    }
    $('account-error').textContent = '';
    $('token-secret').hidden = false;
    const secret = $('token-secret-value');
    secret.value = answer.doc.token;
    secret.focus();
    secret.select();
    await showTokens();
  });

  // ---- The listing: sorting and filtering in place.
  if (!table) return;
  const tbody = table.tBodies[0];
  const rows = () => Array.from(tbody.rows);
  const order = { key: 'name', descending: false };
  {
    const query = new URLSearchParams(location.search);
    if (['size', 'type', 'modified'].includes(query.get('sort'))) order.key = query.get('sort');
    order.descending = query.get('order') === 'desc';
  }

  function compare(a, b) {
    const folder = (row) => (row.dataset.kind === 'collection' ? 0 : 1);
    if (folder(a) !== folder(b)) return folder(a) - folder(b);
    const name = a.dataset.name.localeCompare(b.dataset.name, undefined, { sensitivity: 'base' });
    let by = 0;
    if (order.key === 'size' || order.key === 'modified') {
      by = Number(a.dataset[order.key]) - Number(b.dataset[order.key]);
    } else if (order.key === 'type') {
      by = a.dataset.type.localeCompare(b.dataset.type);
    }
    by = by || name;
    return order.descending ? -by : by;
  }

  function sortRows() {
    const sorted = rows().sort(compare);
    tbody.append(...sorted);
    for (const th of table.tHead.querySelectorAll('th[data-sort]')) {
      const current = th.dataset.sort === order.key;
      if (current) th.setAttribute('aria-sort', order.descending ? 'descending' : 'ascending');
      else th.removeAttribute('aria-sort');
      const next = current && !order.descending ? 'desc' : 'asc';
      th.querySelector('button').value = next;
    }
  }

  function enhanceHead() {
    for (const th of table.tHead.querySelectorAll('th[data-sort]')) {
      th.querySelector('button').addEventListener('click', (event) => {
        event.preventDefault();
        const key = th.dataset.sort;
        order.descending = order.key === key ? !order.descending : false;
        order.key = key;
        sortRows();
        const query = `?sort=${order.key}&order=${order.descending ? 'desc' : 'asc'}`;
        history.replaceState(null, '', query);
        say(`Sorted by ${key}, ${order.descending ? 'descending' : 'ascending'}.`);
      });
    }
  }

  const filter = $('filter');
  function applyFilter() {
    const wanted = filter.value.trim().toLowerCase();
    let shown = 0;
    const all = rows();
    for (const row of all) {
      const match = !wanted || row.dataset.name.toLowerCase().includes(wanted);
      row.hidden = !match;
      if (match) shown += 1;
    }
    $('filter-count').textContent = wanted ? `${shown} of ${all.length} shown` : '';
  }
  filter.addEventListener('input', applyFilter);
  filter.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && filter.value) {
      filter.value = '';
      applyFilter();
    }
  });

  // ---- Row actions.
  function kindOfPreview(type) {
    if (/^image\//.test(type)) return 'image';
    if (/^(text\/|application\/(json|javascript|xml|toml|yaml|x-sh))/.test(type)) return 'text';
    if (type === 'application/pdf') return 'pdf';
    if (/^audio\//.test(type)) return 'audio';
    if (/^video\//.test(type)) return 'video';
    return '';
  }

  function actionButton(label, text, onClick, extra) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `small ${extra || ''}`.trim();
    button.textContent = text;
    button.setAttribute('aria-label', label);
    button.addEventListener('click', onClick);
    return button;
  }

  function decorate(row) {
    const cell = row.querySelector('td.actions');
    const link = row.querySelector('td.name a');
    const name = row.dataset.name;
    cell.replaceChildren();
    if (row.dataset.kind === 'resource') {
      if (row.hasAttribute('data-due')) {
        cell.append(actionButton(`Buy ${name} for ${credits(row.dataset.price)}`, 'Buy',
          () => buy(row)));
      } else if (kindOfPreview(row.dataset.type)) {
        cell.append(actionButton(`Preview ${name}`, 'Preview', () => preview(row)));
      }
    }
    if (row.hasAttribute('data-deletable')) {
      cell.append(actionButton(`Rename ${name}`, 'Rename', () => rename(row)));
      cell.append(actionButton(`Delete ${name}`, 'Delete', () => remove(row), 'danger'));
      // Dragged onto a folder's row, it moves there.
      row.draggable = true;
      row.ondragstart = (event) => {
        event.dataTransfer.setData('application/x-larder-row', urlOf(row));
        event.dataTransfer.effectAllowed = 'move';
      };
    }
    if (row.dataset.kind === 'collection') {
      row.ondragover = (event) => {
        if (!event.dataTransfer.types.includes('application/x-larder-row')) return;
        event.preventDefault();
        row.classList.add('drop-target');
      };
      row.ondragleave = () => row.classList.remove('drop-target');
      row.ondrop = (event) => {
        const from = event.dataTransfer.getData('application/x-larder-row');
        row.classList.remove('drop-target');
        if (!from || from === urlOf(row)) return;
        event.preventDefault();
        event.stopPropagation();
        const moved = rows().find((r) => urlOf(r) === from);
        if (moved) move(moved, urlOf(row));
      };
    }
    if (!link.dataset.enhanced) {
      link.dataset.enhanced = 'yes';
      link.addEventListener('click', (event) => {
        if (event.ctrlKey || event.metaKey || event.shiftKey) return;
        if (row.hasAttribute('data-due')) {
          event.preventDefault();
          buy(row);
        }
      });
    }
  }

  function urlOf(row) {
    return row.querySelector('td.name a').getAttribute('href');
  }

  // ---- Previews.
  const previewDialog = $('preview');
  async function preview(row) {
    const url = urlOf(row);
    const name = row.dataset.name;
    const kind = kindOfPreview(row.dataset.type);
    const area = $('preview-body');
    area.replaceChildren();
    $('preview-title').textContent = name;
    $('preview-download').href = url;
    $('preview-download').setAttribute('aria-label', `Download ${name}`);
    let element;
    if (kind === 'image') {
      element = document.createElement('img');
      element.alt = `Preview of ${name}`;
      element.src = url;
    } else if (kind === 'pdf') {
      element = document.createElement('iframe');
      element.title = `Preview of ${name}`;
      element.src = url;
    } else if (kind === 'audio' || kind === 'video') {
      element = document.createElement(kind);
      element.controls = true;
      element.src = url;
      element.setAttribute('aria-label', `Preview of ${name}`);
    } else {
      const limit = 256 * 1024;
      const headers = authorize(new Headers({ Range: `bytes=0-${limit - 1}` }));
      const response = await fetch(url, init('GET', headers)).catch(() => null);
      if (!response || !response.ok) {
        say(explain(response ? response.status : 0, null, name), true);
        return;
      }
      element = document.createElement('pre');
      element.tabIndex = 0;
      element.setAttribute('aria-label', `Contents of ${name}`);
      element.textContent = await response.text();
      if (response.status === 206) {
        const note = document.createElement('p');
        note.className = 'muted';
        note.textContent = `The first ${size(limit)} of ${size(row.dataset.size)} are shown.`;
        area.append(note);
      }
    }
    element.className = 'preview-content';
    area.prepend(element);
    previewDialog.showModal();
  }
  previewDialog.addEventListener('close', () => $('preview-body').replaceChildren());

  // ---- Buying.
  async function buy(row) {
    const name = row.dataset.name;
    const price = Number(row.dataset.price);
    if (!account) {
      const go = await ask({
        title: `${name} is for sale`,
        text: `${name} costs ${credits(price)}. Sign in to buy it; once bought, you can open ` +
          'it as often as you like.',
        yes: 'Sign in',
      });
      if (go) openSignIn();
      return;
    }
    const me = await api('GET', '/.larder/account');
    const balance = me.status === 200 ? me.doc.balance : null;
    if (balance !== null && balance < price) {
      await ask({
        title: `Not enough credits for ${name}`,
        text: `${name} costs ${credits(price)}, and your balance is ${credits(balance)}. ` +
          'Ask an admin for more credits.',
      });
      return;
    }
    const sure = await ask({
      title: `Buy ${name}?`,
      text: `${name} costs ${credits(price)}. Your balance is ${credits(balance)}; it will be ` +
        `${credits(balance - price)} after. Once bought, you can open it as often as you like.`,
      yes: `Buy for ${credits(price)}`,
    });
    if (!sure) return;
    const answer = await api('POST', '/.larder/purchases', { json: { path: urlOf(row) } });
    if (answer.status === 201 || answer.status === 200) {
      row.removeAttribute('data-due');
      row.setAttribute('data-bought', '');
      const cell = row.querySelector('td.price');
      if (cell) cell.textContent = 'Bought';
      decorate(row);
      say(`Bought ${name} for ${credits(answer.doc.price)}; your balance is ` +
        `${credits(answer.doc.balance)}.`);
    } else {
      say(explain(answer.status, answer.doc, name), true);
    }
  }

  // ---- Deleting.
  // ---- Rename and move: larder's own MOVE, never over something that is there.
  async function move(row, folderUrl, newName) {
    const name = row.dataset.name;
    const folder = row.dataset.kind === 'collection';
    const target = folderUrl + encodeURIComponent(newName || name) + (folder ? '/' : '');
    const destination = new URL(target, location.href).href;
    const answer = await api('MOVE', urlOf(row), {
      headers: { Destination: destination, Overwrite: 'F' },
    });
    const to = decodeURIComponent(new URL(destination).pathname);
    if (answer.status === 201 || answer.status === 204) {
      say(newName ? `Renamed ${name} to ${newName}.` : `Moved ${name} to ${to}.`);
      await refresh();
    } else if (answer.status === 412) {
      say(`Something named ${to} is there already; nothing was moved.`, true);
    } else {
      say(explain(answer.status, answer.doc, name), true);
    }
  }

  async function rename(row) {
    const name = row.dataset.name;
    const wanted = await ask({ title: `Rename ${name}`, label: 'New name', value: name, yes: 'Rename' });
    if (!wanted || wanted === name) return;
    if (wanted.includes('/')) {
      say('A name cannot hold a /; drag the row onto a folder to move it.', true);
      return;
    }
    await move(row, here, wanted);
  }

  async function remove(row) {
    const name = row.dataset.name;
    const folder = row.dataset.kind === 'collection';
    const sure = await ask({
      title: `Delete ${name}${folder ? '/' : ''}?`,
      text: 'This cannot be undone.',
      yes: 'Delete',
      danger: true,
    });
    if (!sure) return;
    // A folder goes only if empty (Depth: 0) until the user says everything may go.
    const headers = folder ? { Depth: '0' } : {};
    if (!folder && row.dataset.etag) headers['If-Match'] = row.dataset.etag;
    let answer = await api('DELETE', urlOf(row), { headers });
    if (answer.status === 409 && folder) {
      const all = await ask({
        title: `${name}/ is not empty`,
        text: `Delete ${name}/ and everything in it? This cannot be undone.`,
        yes: 'Delete everything',
        danger: true,
      });
      if (!all) return;
      answer = await api('DELETE', urlOf(row), { headers: { Depth: 'infinity' } });
    }
    if (answer.status === 204) {
      row.remove();
      say(`Deleted ${name}.`);
      await refresh();
    } else {
      say(explain(answer.status, answer.doc, name), true);
    }
  }

  // ---- Reloading the listing after a change, without leaving the page.
  async function refresh() {
    const headers = authorize(new Headers({ Accept: 'text/html' }));
    const response = await fetch(location.href, init('GET', headers)).catch(() => null);
    if (!response || !response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), 'text/html');
    const freshTable = fresh.getElementById('listing');
    if (!freshTable) return;
    table.tHead.replaceWith(document.adoptNode(freshTable.tHead));
    tbody.replaceChildren(...Array.from(freshTable.tBodies[0].rows).map((r) => document.adoptNode(r)));
    $('summary').textContent = fresh.getElementById('summary').textContent;
    enhanceHead();
    rows().forEach(decorate);
    sortRows();
    applyFilter();
  }

  // ---- Uploads (PUT, one file at a time, create-only unless the person agrees to replace).
  function putFile(file, item, replace) {
    const progress = item.querySelector('progress');
    const note = item.querySelector('.note');
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', here + encodeURIComponent(file.name));
      const secret = token();
      if (secret) xhr.setRequestHeader('Authorization', `Bearer ${secret}`);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
      if (!replace) xhr.setRequestHeader('If-None-Match', '*');
      xhr.upload.addEventListener('progress', (event) => {
        if (!event.lengthComputable) return;
        progress.max = event.total;
        progress.value = event.loaded;
        note.textContent = `${size(event.loaded)} of ${size(event.total)}`;
      });
      xhr.addEventListener('load', () => {
        let doc = null;
        try {
          doc = JSON.parse(xhr.responseText);
        } catch (error) {
          doc = null;
        }
        resolve({ status: xhr.status, doc });
      });
      xhr.addEventListener('error', () => resolve({ status: 0, doc: null }));
      xhr.addEventListener('abort', () => resolve({ status: 0, doc: null }));
      xhr.send(file);
    });
  }

  async function upload(file) {
    const item = document.createElement('li');
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = file.name;
    const progress = document.createElement('progress');
    progress.max = Math.max(file.size, 1);
    progress.value = 0;
    progress.setAttribute('aria-label', `Uploading ${file.name}`);
    const note = document.createElement('span');
    note.className = 'note';
    note.textContent = `0 B of ${size(file.size)}`;
    item.append(label, progress, note);
    $('uploads').append(item);
    let answer = await putFile(file, item, false);
    if (answer.status === 412) {
      const replace = await ask({
        title: `Replace ${file.name}?`,
        text: `A file called ${file.name} is already here. Replace it with the one you chose?`,
        yes: 'Replace',
        danger: true,
      });
      if (!replace) {
        note.textContent = 'Not uploaded: a file with this name is already here.';
        item.classList.add('failed');
        return false;
      }
      answer = await putFile(file, item, true);
    }
    if (answer.status === 200 || answer.status === 201) {
      progress.value = progress.max;
      note.textContent = answer.status === 201 ? 'Uploaded.' : 'Uploaded, replacing the old one.';
      item.classList.add('done');
      return true;
    }
    item.dataset.answer = String(answer.status);
    if (answer.status === 0) {
      // The server may have refused before reading the body (a 402 for the quota) and the
      // browser only saw the connection close: ask it what it knows.
      const me = account ? await api('GET', '/.larder/account') : null;
      const storage = me && me.status === 200 ? me.doc.storage : null;
      if (storage && storage.quota !== null && storage.used + file.size > storage.quota) {
        answer = {
          status: 402,
          doc: {
            type: '/.larder/problems/quota-exceeded',
            used: storage.used,
            quota: storage.quota,
            needed: file.size,
            plan: me.doc.plan,
          },
        };
      }
    }
    note.textContent = explain(answer.status, answer.doc, file.name);
    item.classList.add('failed');
    progress.hidden = true;
    return false;
  }

  async function uploadAll(files) {
    if (!files.length) return;
    // An XMLHttpRequest always carries the browser's credentials, so a 401 would open the
    // browser's prompt: make sure the token still works first.
    if (token() && (await api('GET', '/.larder/account')).status === 401) {
      forgetToken();
      say('Your session has ended. Sign in again to upload.', true);
      $('sign-in-button').hidden = false;
      return;
    }
    say(`Uploading ${files.length} file${files.length === 1 ? '' : 's'}…`);
    let stored = 0;
    for (const file of files) {
      if (await upload(file)) stored += 1;
    }
    await refresh();
    const failed = files.length - stored;
    say(`${stored} of ${files.length} uploaded${failed ? `; ${failed} failed, see below` : ''}.`,
      failed > 0);
  }

  async function newFolder() {
    const name = await ask({
      title: 'New folder',
      text: `The folder is made in ${decodeURIComponent(here)}.`,
      label: 'Folder name',
      yes: 'Create',
    });
    if (name === null) return;
    const clean = name.trim();
    if (!clean || clean.includes('/') || clean === '.' || clean === '..') {
      say('A folder name cannot be empty, ".", ".." or contain "/".', true);
      return;
    }
    const answer = await api('PUT', `${here}${encodeURIComponent(clean)}/`, {
      headers: { 'If-None-Match': '*' },
    });
    if (answer.status === 201) {
      say(`Created the folder ${clean}.`);
      await refresh();
    } else if (answer.status === 412) {
      say(`Something called ${clean} is already here.`, true);
    } else {
      say(explain(answer.status, answer.doc, clean), true);
    }
  }

  // ---- Start.
  $('tools').hidden = false;
  enhanceHead();
  rows().forEach(decorate);
  sortRows();
  if (canWrite) {
    $('write-tools').hidden = false;
    const picker = $('picker');
    $('upload-button').addEventListener('click', () => picker.click());
    picker.addEventListener('change', () => {
      const files = Array.from(picker.files);
      picker.value = '';
      uploadAll(files);
    });
    $('new-folder-button').addEventListener('click', newFolder);
    const drop = $('drop');
    let depth = 0;
    const carriesFiles = (event) => Array.from(event.dataTransfer.types).includes('Files');
    document.addEventListener('dragenter', (event) => {
      if (!carriesFiles(event)) return;
      depth += 1;
      drop.hidden = false;
    });
    document.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) drop.hidden = true;
    });
    document.addEventListener('dragover', (event) => {
      if (carriesFiles(event)) event.preventDefault();
    });
    document.addEventListener('drop', (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth = 0;
      drop.hidden = true;
      uploadAll(Array.from(event.dataTransfer.files));
    });
  }
})();
