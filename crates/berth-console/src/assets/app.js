// berth console: talks to berth's own AWS-compatible APIs from the browser (no build step).
'use strict';

const PAGE = 50; // tasks per page: the list stays small whatever the cluster holds
const $ = (sel, root) => (root || document).querySelector(sel);
const esc = (v) => String(v == null ? '' : v).replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const short = (arn) => String(arn || '').split('/').pop();
const fmtTime = (t) => (t == null ? '' : new Date(toMs(t)).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
const toMs = (t) => (typeof t === 'number' ? t * 1000 : Date.parse(t));
const num = (v, d) => Number(v || 0).toLocaleString('en-US', { maximumFractionDigits: d == null ? 2 : d });

// ---- sign-in: an access key in sessionStorage, every request SigV4-signed (sigv4.js) ----------

const CRED_KEY = 'berth.credentials';
const AUTH_ERRORS = ['MissingAuthenticationTokenException', 'UnrecognizedClientException',
  'InvalidSignatureException', 'IncompleteSignatureException'];
function credentials() {
  try { return JSON.parse(sessionStorage.getItem(CRED_KEY)); } catch (_) { return null; }
}

// A signed fetch to this origin; an authentication refusal signs out and shows the form.
async function signedFetch(method, path, pairs, headers, body) {
  const cred = credentials();
  if (!cred) { showLogin(''); throw new Error('signed out'); }
  const qs = berthSigV4.query(pairs || []);
  const h = Object.assign({}, headers, berthSigV4.sign(method, path, qs, headers, body, cred));
  const r = await fetch(path + (qs ? '?' + qs : ''), { method, headers: h, body: method === 'GET' ? undefined : body });
  let j = {};
  try { j = await r.json(); } catch (_) { /* empty body */ }
  const type = String(j.__type || '').split('#').pop();
  if (!r.ok && AUTH_ERRORS.includes(type)) {
    sessionStorage.removeItem(CRED_KEY);
    showLogin(`${type}: ${j.message || ''}`);
    throw new Error('signed out');
  }
  if (!r.ok) throw new Error((type || r.status) + ': ' + (j.message || j.Message || ''));
  return j;
}

function showLogin(msg) {
  gen += 1;
  document.body.classList.add('signed-out');
  $('#main').innerHTML = `<form id="login" class="login" autocomplete="off">
    <h1>Sign in</h1>
    <p class="muted">With the access key of this berth server: <code>berth credentials --data-dir DIR</code>
    prints it. The secret stays in this tab (sessionStorage) and signs each request (SigV4).</p>
    <label>Access key ID <input id="login-id" name="id" required spellcheck="false"></label>
    <label>Secret access key <input id="login-secret" name="secret" type="password" required></label>
    <button id="login-submit" type="submit">Sign in</button>
    <p id="login-error" class="error">${esc(msg)}</p></form>`;
  $('#login').onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(CRED_KEY, JSON.stringify({ id: $('#login-id').value.trim(), secret: $('#login-secret').value.trim() }));
    start();
  };
}

function start() {
  if (!credentials()) return showLogin('');
  document.body.classList.remove('signed-out');
  $('#main').innerHTML = '<p class="muted">Loading…</p>';
  return loadClusters().then(() => { if (credentials()) route(); });
}

const call = (target, body, contentType) => signedFetch('POST', '/', [],
  { 'X-Amz-Target': target, 'Content-Type': contentType || 'application/x-amz-json-1.1' }, JSON.stringify(body || {}));
const ecs = (op, b) => call('AmazonEC2ContainerServiceV20141113.' + op, b);
const logs = (op, b) => call('Logs_20140328.' + op, b);
const cloudwatch = (op, b) => call('GraniteServiceVersion20100801.' + op, b, 'application/x-amz-json-1.0');

// Each navigation bumps the generation; timers and in-flight loads of older views stop.
let gen = 0;
const state = { cluster: localStorage.getItem('berth.cluster') || 'default', taskStatus: 'RUNNING', page: 0 };
const taskArns = { key: '', arns: [], next: undefined }; // ListTasks pages fetched so far

function setStatus(msg) { $('#status').textContent = msg || ''; }
function every(ms, g, fn) {
  const tick = async () => {
    if (g !== gen) return;
    try { await fn(); } catch (e) { setStatus(e.message); }
    if (g === gen) setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

async function loadClusters() {
  const sel = $('#cluster');
  try {
    const { clusterArns = [] } = await ecs('ListClusters', {});
    const names = clusterArns.map(short).sort();
    if (!names.includes(state.cluster) && names.length) state.cluster = names[0];
    sel.innerHTML = names.map((n) => `<option${n === state.cluster ? ' selected' : ''}>${esc(n)}</option>`).join('')
      || '<option>default</option>';
  } catch (e) { if (e.message !== 'signed out') setStatus(e.message); }
}

function route() {
  gen += 1;
  const g = gen;
  const h = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const main = $('#main');
  if (h[0] === 'usage') return viewUsage(main, g);
  if (h[0] === 'service' && h[1]) return viewService(main, g, h[1]);
  if (h[0] === 'task' && h[1]) return viewTask(main, g, h[1]);
  return viewCluster(main, g);
}

// ---- cluster: services + paginated tasks -------------------------------------------------------

async function describeServices(names) {
  const out = [];
  for (let i = 0; i < names.length; i += 10) {
    const r = await ecs('DescribeServices', { cluster: state.cluster, services: names.slice(i, i + 10) });
    out.push(...(r.services || []));
  }
  return out;
}

async function listAllServices() {
  const arns = [];
  let nextToken;
  do {
    const r = await ecs('ListServices', { cluster: state.cluster, maxResults: 100, nextToken });
    arns.push(...(r.serviceArns || []));
    nextToken = r.nextToken;
  } while (nextToken);
  return arns.map(short);
}

function servicesTable(services) {
  if (!services.length) return '<p class="muted">No services in this cluster.</p>';
  return `<table class="grid" id="services"><thead><tr><th>Service</th><th>Status</th><th>Desired</th><th>Running</th>
    <th>Pending</th><th>Deployments</th><th>Task definition</th></tr></thead><tbody>${services.map((s) => `
    <tr><td><a href="#/service/${encodeURIComponent(s.serviceName)}">${esc(s.serviceName)}</a></td>
    <td>${esc(s.status)}</td><td>${esc(s.desiredCount)}</td><td>${esc(s.runningCount)}</td><td>${esc(s.pendingCount)}</td>
    <td>${(s.deployments || []).map((d) => `<span class="pill">${esc(d.status)} ${esc(d.rolloutState || '')} ${esc(d.runningCount)}/${esc(d.desiredCount)}</span>`).join(' ')}</td>
    <td>${esc(short(s.taskDefinition))}</td></tr>`).join('')}</tbody></table>`;
}

async function ensureTaskArns(upTo, filter) {
  const key = JSON.stringify([state.cluster, state.taskStatus, filter || {}]);
  if (taskArns.key !== key) Object.assign(taskArns, { key, arns: [], next: undefined });
  while (taskArns.arns.length < upTo && taskArns.next !== null) {
    const r = await ecs('ListTasks', Object.assign({
      cluster: state.cluster, desiredStatus: state.taskStatus, maxResults: 100, nextToken: taskArns.next,
    }, filter || {}));
    taskArns.arns.push(...(r.taskArns || []));
    taskArns.next = r.nextToken || null;
  }
}

async function describeTasks(arns) {
  const out = [];
  for (let i = 0; i < arns.length; i += 100) {
    const r = await ecs('DescribeTasks', { cluster: state.cluster, tasks: arns.slice(i, i + 100) });
    out.push(...(r.tasks || []));
  }
  const order = new Map(arns.map((a, i) => [a, i]));
  return out.sort((a, b) => order.get(a.taskArn) - order.get(b.taskArn));
}

function address(t) {
  const ips = [];
  for (const c of t.containers || []) {
    for (const n of c.networkInterfaces || []) if (n.privateIpv4Address) ips.push(n.privateIpv4Address);
  }
  for (const a of t.attachments || []) {
    for (const d of a.details || []) if (d.name === 'privateIPv4Address' && d.value) ips.push(d.value);
  }
  return [...new Set(ips)].join(', ');
}

function exitCodes(t) {
  return (t.containers || []).map((c) => (c.exitCode == null ? '' : `${c.name}=${c.exitCode}`)).filter(Boolean).join(' ');
}

function tasksTable(tasks) {
  if (!tasks.length) return '<p class="muted">No tasks.</p>';
  return `<table class="grid" id="tasks"><thead><tr><th>Task</th><th>Last status</th><th>Desired</th><th>Health</th>
    <th>Group</th><th>CPU/Mem</th><th>Capacity</th><th>Address</th><th>Exit codes</th><th>Started</th><th>Stopped reason</th></tr></thead>
    <tbody>${tasks.map((t) => `<tr><td><a class="mono" href="#/task/${encodeURIComponent(short(t.taskArn))}">${esc(short(t.taskArn))}</a></td>
    <td><span class="st st-${esc(t.lastStatus)}">${esc(t.lastStatus)}</span></td><td>${esc(t.desiredStatus)}</td>
    <td>${esc(t.healthStatus)}</td><td>${esc(t.group)}</td><td>${esc(t.cpu)}/${esc(t.memory)}</td>
    <td>${esc(t.capacityProviderName || t.launchType)}</td><td class="mono">${esc(address(t))}</td><td>${esc(exitCodes(t))}</td>
    <td>${esc(fmtTime(t.startedAt))}</td><td>${esc(t.stoppedReason)}</td></tr>`).join('')}</tbody></table>`;
}

function renderTaskPage(el, tasks, onPage) {
  const from = state.page * PAGE;
  const known = taskArns.arns.length;
  const more = taskArns.next !== null;
  el.innerHTML = `<div class="bar">
      <label>Desired status <select id="task-status"><option${state.taskStatus === 'RUNNING' ? ' selected' : ''}>RUNNING</option>
      <option${state.taskStatus === 'STOPPED' ? ' selected' : ''}>STOPPED</option></select></label>
      <button id="prev"${state.page === 0 ? ' disabled' : ''}>‹ Prev</button>
      <span id="task-range">${known ? `${from + 1}–${Math.min(from + PAGE, known)} of ${known}${more ? '+' : ''}` : '0 tasks'}</span>
      <button id="next"${from + PAGE >= known && !more ? ' disabled' : ''}>Next ›</button></div>${tasksTable(tasks)}`;
  $('#task-status', el).onchange = (e) => { state.taskStatus = e.target.value; state.page = 0; onPage(); };
  $('#prev', el).onclick = () => { state.page = Math.max(0, state.page - 1); onPage(); };
  $('#next', el).onclick = () => { state.page += 1; onPage(); };
}

async function loadTaskPage(el, g, filter) {
  const from = state.page * PAGE;
  await ensureTaskArns(from + PAGE + 1, filter);
  if (g !== gen) return;
  if (from >= taskArns.arns.length && state.page > 0) state.page = Math.max(0, Math.ceil(taskArns.arns.length / PAGE) - 1);
  const start = state.page * PAGE;
  const tasks = await describeTasks(taskArns.arns.slice(start, start + PAGE));
  if (g !== gen) return;
  renderTaskPage(el, tasks, () => loadTaskPage(el, g, filter));
  el.dataset.rendered = String(tasks.length);
}

function viewCluster(main, g) {
  main.innerHTML = `<h1>Cluster <span id="cluster-name">${esc(state.cluster)}</span></h1>
    <section><h2>Services</h2><div id="svc-list"><p class="muted">Loading…</p></div></section>
    <section><h2>Tasks</h2><div id="task-list"><p class="muted">Loading…</p></div></section>`;
  const refresh = async (full) => {
    const names = await listAllServices();
    const services = await describeServices(names);
    if (g !== gen) return;
    $('#svc-list').innerHTML = servicesTable(services);
    if (full) taskArns.key = ''; // re-list task ARNs on every refresh
    await loadTaskPage($('#task-list'), g);
  };
  refresh(true).then(() => setStatus(''), (e) => setStatus(e.message));
  every(5000, g, () => refresh(true));
}

// ---- service: deployments, events, charts, its tasks ------------------------------------------

function chartSvg(points, label) {
  if (!points.length) return `<div class="chart nodata">${esc(label)}: no data</div>`;
  const W = 420, H = 120, P = 4;
  const xs = points.map((p) => p.t), ys = points.map((p) => p.v);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(100, ...ys);
  const path = points.map((p) => `${(P + (p.t - x0) / (x1 - x0) * (W - 2 * P)).toFixed(1)},${(H - P - p.v / y1 * (H - 2 * P)).toFixed(1)}`).join(' ');
  const last = ys[ys.length - 1];
  return `<div class="chart"><div>${esc(label)}: <b>${num(last, 1)}%</b> (avg/min, last hour)</div>
    <svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(label)}">
    <rect x="0" y="0" width="${W}" height="${H}" class="bg"/><polyline points="${path}" class="line"/></svg></div>`;
}

async function metric(name, service) {
  const end = Math.floor(Date.now() / 1000);
  try {
    const r = await cloudwatch('GetMetricStatistics', {
      Namespace: 'AWS/ECS', MetricName: name, StartTime: end - 3600, EndTime: end, Period: 60, Statistics: ['Average'],
      Dimensions: [{ Name: 'ClusterName', Value: state.cluster }, { Name: 'ServiceName', Value: service }],
    });
    return (r.Datapoints || []).map((d) => ({ t: toMs(d.Timestamp), v: Number(d.Average) }))
      .filter((p) => Number.isFinite(p.t) && Number.isFinite(p.v)).sort((a, b) => a.t - b.t);
  } catch (_) {
    return []; // CloudWatch not served (yet): render "no data"
  }
}

function viewService(main, g, name) {
  state.page = 0;
  main.innerHTML = `<h1>Service <span id="service-name">${esc(name)}</span></h1>
    <div id="svc-summary"><p class="muted">Loading…</p></div>
    <section><h2>Metrics</h2><div id="charts" class="charts"></div></section>
    <section><h2>Deployments</h2><div id="deployments"></div></section>
    <section><h2>Tasks</h2><div id="task-list"></div></section>
    <section><h2>Events</h2><div id="events"></div></section>`;
  const refresh = async () => {
    const [s] = await describeServices([name]);
    if (g !== gen) return;
    if (!s) { $('#svc-summary').innerHTML = '<p class="error">Service not found.</p>'; return; }
    $('#svc-summary').innerHTML = `<dl class="kv"><dt>Status</dt><dd>${esc(s.status)}</dd>
      <dt>Desired</dt><dd id="svc-desired">${esc(s.desiredCount)}</dd><dt>Running</dt><dd id="svc-running">${esc(s.runningCount)}</dd>
      <dt>Pending</dt><dd>${esc(s.pendingCount)}</dd><dt>Task definition</dt><dd>${esc(short(s.taskDefinition))}</dd>
      <dt>Launch</dt><dd>${esc(s.launchType || (s.capacityProviderStrategy || []).map((c) => c.capacityProvider).join(', '))}</dd></dl>`;
    $('#deployments').innerHTML = `<table class="grid"><thead><tr><th>Id</th><th>Status</th><th>Rollout</th><th>Desired</th>
      <th>Running</th><th>Pending</th><th>Failed</th><th>Task definition</th><th>Updated</th></tr></thead><tbody>${(s.deployments || []).map((d) => `
      <tr><td class="mono">${esc(d.id)}</td><td>${esc(d.status)}</td><td>${esc(d.rolloutState)}</td><td>${esc(d.desiredCount)}</td>
      <td>${esc(d.runningCount)}</td><td>${esc(d.pendingCount)}</td><td>${esc(d.failedTasks)}</td><td>${esc(short(d.taskDefinition))}</td>
      <td>${esc(fmtTime(d.updatedAt))}</td></tr>`).join('')}</tbody></table>`;
    $('#events').innerHTML = `<ul class="events">${(s.events || []).slice(0, 50).map((e) =>
      `<li><span class="muted">${esc(fmtTime(e.createdAt))}</span> ${esc(e.message)}</li>`).join('')}</ul>`;
    await loadTaskPage($('#task-list'), g, { serviceName: name });
  };
  const charts = async () => {
    const [cpu, mem] = await Promise.all([metric('CPUUtilization', name), metric('MemoryUtilization', name)]);
    if (g === gen) $('#charts').innerHTML = chartSvg(cpu, 'CPUUtilization') + chartSvg(mem, 'MemoryUtilization');
  };
  taskArns.key = '';
  refresh().then(() => setStatus(''), (e) => setStatus(e.message));
  charts();
  every(5000, g, () => { taskArns.key = ''; return refresh(); });
  every(30000, g, charts);
}

// ---- task: containers, details, live logs ------------------------------------------------------

function viewTask(main, g, id) {
  main.innerHTML = `<h1>Task <span class="mono" id="task-id">${esc(id)}</span></h1>
    <div id="task-summary"><p class="muted">Loading…</p></div>
    <section><h2>Containers</h2><div id="containers"></div></section>
    <section><h2>Logs <span class="muted small">(live)</span></h2><div id="logs"></div></section>`;
  let streams = null; // [{container, group, stream, token, el}]
  const refresh = async () => {
    const r = await ecs('DescribeTasks', { cluster: state.cluster, tasks: [id] });
    const t = (r.tasks || [])[0];
    if (g !== gen) return;
    if (!t) { $('#task-summary').innerHTML = '<p class="error">Task not found in this cluster.</p>'; return; }
    $('#task-summary').innerHTML = `<dl class="kv"><dt>Last status</dt><dd id="task-last-status">${esc(t.lastStatus)}</dd>
      <dt>Desired status</dt><dd>${esc(t.desiredStatus)}</dd><dt>Health</dt><dd>${esc(t.healthStatus)}</dd>
      <dt>Task definition</dt><dd>${esc(short(t.taskDefinitionArn))}</dd><dt>Group</dt><dd>${esc(t.group)}</dd>
      <dt>CPU / memory</dt><dd>${esc(t.cpu)} units / ${esc(t.memory)} MiB</dd>
      <dt>Capacity</dt><dd>${esc(t.capacityProviderName || t.launchType)}</dd><dt>Address</dt><dd class="mono">${esc(address(t))}</dd>
      <dt>Created</dt><dd>${esc(fmtTime(t.createdAt))}</dd><dt>Pull started</dt><dd>${esc(fmtTime(t.pullStartedAt))}</dd>
      <dt>Started</dt><dd>${esc(fmtTime(t.startedAt))}</dd><dt>Stopped</dt><dd>${esc(fmtTime(t.stoppedAt))}</dd>
      <dt>Stop code</dt><dd>${esc(t.stopCode)}</dd><dt>Stopped reason</dt><dd>${esc(t.stoppedReason)}</dd></dl>`;
    $('#containers').innerHTML = `<table class="grid"><thead><tr><th>Name</th><th>Image</th><th>Last status</th><th>Health</th>
      <th>Exit code</th><th>Reason</th></tr></thead><tbody>${(t.containers || []).map((c) => `<tr><td>${esc(c.name)}</td>
      <td class="mono">${esc(c.image)}</td><td>${esc(c.lastStatus)}</td><td>${esc(c.healthStatus)}</td>
      <td>${esc(c.exitCode)}</td><td>${esc(c.reason)}</td></tr>`).join('')}</tbody></table>`;
    if (!streams) {
      const { taskDefinition: td } = await ecs('DescribeTaskDefinition', { taskDefinition: t.taskDefinitionArn });
      streams = [];
      for (const c of (td && td.containerDefinitions) || []) {
        const lc = c.logConfiguration;
        if (!lc || lc.logDriver !== 'awslogs' || !lc.options) continue;
        const o = lc.options;
        streams.push({ container: c.name, group: o['awslogs-group'], stream: `${o['awslogs-stream-prefix']}/${c.name}/${id}` });
      }
      $('#logs').innerHTML = streams.length ? streams.map((s, i) => `<h3>${esc(s.container)} <span class="muted small mono">
        ${esc(s.group)} ${esc(s.stream)}</span></h3><pre class="log" id="log-${i}"></pre>`).join('')
        : '<p class="muted">No container uses the awslogs log driver.</p>';
      streams.forEach((s, i) => { s.el = $('#log-' + i); });
      pollLogs();
    }
  };
  const pollLogs = async () => {
    for (const s of streams || []) {
      try {
        for (let n = 0; n < 10; n += 1) { // at most 10 pages per poll
          const r = await logs('GetLogEvents', {
            logGroupName: s.group, logStreamName: s.stream, startFromHead: true, limit: 1000, nextToken: s.token,
          });
          if (g !== gen) return;
          const evs = r.events || [];
          if (evs.length) {
            const stick = s.el.scrollTop + s.el.clientHeight >= s.el.scrollHeight - 4;
            s.el.append(document.createTextNode(evs.map((e) => `${fmtTime(e.timestamp / 1000)}  ${e.message}\n`).join('')));
            if (s.el.textContent.length > 2000000) s.el.textContent = s.el.textContent.slice(-1000000);
            if (stick) s.el.scrollTop = s.el.scrollHeight;
          }
          const same = r.nextForwardToken === s.token;
          s.token = r.nextForwardToken || s.token;
          if (!evs.length || same) break;
        }
        s.el.classList.remove('nodata');
      } catch (e) {
        if (!s.el.textContent) { s.el.textContent = `(no log events yet: ${e.message})`; s.el.classList.add('nodata'); s.token = undefined; }
      }
    }
  };
  refresh().then(() => setStatus(''), (e) => setStatus(e.message));
  every(5000, g, refresh);
  every(2000, g, async () => {
    for (const s of streams || []) if (s.el.classList.contains('nodata')) s.el.textContent = '';
    await pollLogs();
  });
}

// ---- usage and cost ----------------------------------------------------------------------------

function usageTable(rep, id, label) {
  const row = (r) => `<tr><td class="mono">${esc(r.key)}</td><td>${esc(r.tasks)}</td><td>${num(r.vcpu_seconds)}</td>
    <td>${num(r.gb_seconds)}</td><td>${num(r.cost, 6)}</td></tr>`;
  return `<table class="grid" id="${id}"><thead><tr><th>${esc(label)}</th><th>Tasks</th><th>vCPU-seconds</th><th>GB-seconds</th>
    <th>Cost (${esc(rep.currency)})</th></tr></thead><tbody>${rep.rows.map(row).join('')}</tbody>
    <tfoot>${row(rep.total)}</tfoot></table>`;
}

function viewUsage(main, g) {
  main.innerHTML = `<h1>Usage &amp; cost <span class="muted small">cluster ${esc(state.cluster)}</span></h1>
    <p class="muted">Per second from image pull start to stop, one-minute minimum, priced per vCPU-hour and GB-hour
    (Fargate on-demand, or Spot for FARGATE_SPOT tasks). Same numbers as <code>berth usage</code>.</p>
    <section><h2>By service</h2><div id="usage-service"></div></section>
    <section><h2>By day</h2><div id="usage-day"></div></section>`;
  const refresh = async () => {
    const get = async (group) => {
      return signedFetch('GET', '/_berth/usage', [['cluster', state.cluster], ['group_by', group]], {}, '');
    };
    const [bySvc, byDay] = await Promise.all([get('service'), get('day')]);
    if (g !== gen) return;
    $('#usage-service').innerHTML = usageTable(bySvc, 'usage-by-service', 'Cluster/service');
    $('#usage-day').innerHTML = usageTable(byDay, 'usage-by-day', 'Day (UTC)');
  };
  refresh().then(() => setStatus(''), (e) => setStatus(e.message));
  every(10000, g, refresh);
}

// ---- start -------------------------------------------------------------------------------------

$('#cluster').onchange = (e) => {
  state.cluster = e.target.value;
  state.page = 0;
  localStorage.setItem('berth.cluster', state.cluster);
  if (/^#\/(service|task)\//.test(location.hash)) location.hash = '#/'; else route();
};
window.addEventListener('hashchange', () => { if (credentials()) route(); });
$('#signout').onclick = (e) => {
  e.preventDefault();
  sessionStorage.removeItem(CRED_KEY);
  showLogin('Signed out.');
};
start();
