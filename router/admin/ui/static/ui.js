// bundle-router fleet view: renders /ui/state and /ui/series (docs/page.md), live over /ui/events.
// Read-only. Every string from the router (route names, versions, metadata, reasons, instance
// names) goes into the page as text: textContent, createTextNode or an attribute, never innerHTML.

const STATE_URL = '/ui/state';
const SERIES_URL = '/ui/series?route=';
const EVENTS_URL = '/ui/events';
const STATE_EVERY_MS = 5000; // guardrail margins and blast radius move without an audit record
const SERIES_EVERY_MS = 10000; // the recorder samples every 10 s
const RECENT_TRIP_MS = 3600 * 1000; // a trip older than the hour it charts is history, not news
const PALETTE_SIZE = 8;
const LIST_LIMIT = 5; // names listed per banner reason before "and N more"

// [field, title, value format, axis format]
const METRICS = [
  ['request_rate', 'request rate', (v) => `${num(v)}/s`, (v) => `${short(v)}/s`],
  ['error_rate', 'error rate', pct, axisPct],
  ['p95_seconds', 'p95 latency', seconds, seconds],
  ['ttft_p95_seconds', 'time to first token (p95)', seconds, seconds],
  ['cost_per_request', 'cost per request', usd, (v) => `$${short(v)}`],
  ['tool_failure_rate', 'tool-call failure rate', pct, axisPct],
  ['refusal_rate', 'refusal rate', pct, axisPct],
  ['eval_pass_rate', 'eval pass rate', pct, axisPct],
];

const SPARSE = new Set(['eval_pass_rate', 'tool_failure_rate']);

const MARK_KINDS = [
  ['trip', 'trip / halt', '--mark-trip'],
  ['rollback', 'rollback / reverse / abort / drill', '--mark-rollback'],
  ['promote', 'promote', '--mark-promote'],
  ['ramp', 'ramp step / deploy / weights', '--mark-step'],
  ['wave', 'wave', '--mark-wave'],
  ['other', 'other', '--mark-other'],
];

// ---------------------------------------------------------------------------------- helpers

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function td(text, field, className) {
  const cell = el('td', className, text);
  if (field) cell.dataset.field = field;
  return cell;
}

function num(v) {
  if (v === null || v === undefined) return 'n/a';
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

function short(v) {
  return v === null || v === undefined ? '' : String(Number(v.toPrecision(2)));
}

function axisPct(v) {
  return v === null || v === undefined ? '' : `${Number((v * 100).toPrecision(2))}%`;
}

function pct(v) {
  return v === null || v === undefined ? 'n/a' : `${(v * 100).toFixed(1)}%`;
}

function seconds(v) {
  if (v === null || v === undefined) return 'n/a';
  return v < 1 ? `${Math.round(v * 1000)}ms` : `${v.toFixed(2)}s`;
}

function usd(v) {
  return v === null || v === undefined ? 'n/a' : `$${v.toFixed(v < 0.01 ? 5 : 4)}`;
}

function weight(w) {
  return `${Number((w ?? 0).toFixed(2))}%`;
}

function duration(s) {
  if (s === null || s === undefined) return 'n/a';
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const r = Math.round(s % 60);
    return r ? `${m}m${r}s` : `${m}m`;
  }
  const h = Math.floor(s / 3600);
  const m = Math.round((s % 3600) / 60);
  return m ? `${h}h${m}m` : `${h}h`;
}

function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  if (s < 86400 * 2) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function localTime(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? String(iso) : t.toLocaleString();
}

// A Verdict's value, printed as the CLI prints it (router/control/guardrails.py Verdict.show).
function verdictValue(unit, v) {
  if (v === null || v === undefined) return 'n/a';
  if (unit === 'rate') return `${(v * 100).toFixed(1)}%`;
  if (unit === 'seconds') return `${Math.round(v * 1000)}ms`;
  return `${v.toFixed(2)}x`;
}

function lowerIsWorse(rule) {
  return rule.includes('pass'); // eval_pass_rate trips when it is surely below its minimum
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#718096';
}

function markKind(action) {
  const a = String(action || '');
  if (a.includes('trip') || a.includes('halt')) return 'trip';
  if (a.includes('rollback') || a.includes('reverse') || a.includes('abort') || a.includes('drill')) return 'rollback';
  if (a.includes('promote')) return 'promote';
  if (a.startsWith('wave')) return 'wave';
  if (a.startsWith('ramp') || a === 'deploy' || a === 'weights') return 'ramp';
  return 'other';
}

function listNames(names) {
  const shown = names.slice(0, LIST_LIMIT).join(', ');
  return names.length > LIST_LIMIT ? `${shown} and ${names.length - LIST_LIMIT} more` : shown;
}

// ------------------------------------------------------------------------------ page state

const views = new Map(); // route name -> RouteView
let lastState = null;
let seenSeqs = null; // audit seqs already shown (null before the first render)
let renderCount = 0;

// ---------------------------------------------------------------------------- the banner

function problemsOf(state) {
  const problems = [];
  for (const [name, route] of Object.entries(state.routes || {})) {
    problems.push(...routeProblems(name, route));
  }
  const grid = state.grid || [];
  const byMark = { refused: [], behind: [], missing: [] };
  for (const cell of grid) if (byMark[cell.mark]) byMark[cell.mark].push(cell);
  if (byMark.refused.length) {
    const first = byMark.refused[0];
    const reason = first.refused && first.refused.reason ? `: ${first.refused.reason}` : '';
    problems.push(`${byMark.refused.length} instance(s) refused the fleet's snapshot: ` +
      `${listNames(byMark.refused.map((c) => c.instance))}${reason}`);
  }
  if (byMark.behind.length) {
    problems.push(`${byMark.behind.length} instance(s) behind the fleet's epoch: ` +
      listNames(byMark.behind.map((c) => `${c.instance} (${c.behind_by ?? '?'} behind)`)));
  }
  if (byMark.missing.length) {
    problems.push(`${byMark.missing.length} instance(s) missing (no heartbeat): ` +
      listNames(byMark.missing.map((c) => `${c.instance} (last ${duration(c.heartbeat_age_seconds)} ago)`)));
  }
  const durability = state.durability || (state.process && state.process.durability);
  if (durability && (durability.degraded || (durability.changes_not_durable || []).length)) {
    const pending = (durability.changes_not_durable || []).length;
    problems.push(`Changes in force are not durable (${pending} pending)` +
      (durability.error ? `: ${durability.error}` : ''));
  }
  if (state.process && state.process.redis_connected === false) {
    problems.push('Redis is not reachable: the fleet grid is the last one read, and the ' +
      'fleet\'s changes wait (bundle-router status --fleet says more)');
  }
  const chain = state.audit && state.audit.chain;
  if (chain && chain.ok === false) {
    problems.push(`The audit chain is broken: ${chain.problem || 'unknown problem'}`);
  }
  return problems;
}

function routeProblems(name, route) {
  const problems = [];
  const rollout = route.rollout;
  const waves = route.waves;
  if ((rollout && rollout.status === 'halted') || (waves && waves.status === 'halted')) {
    problems.push(`${name}: the rollout is halted: ${(rollout && rollout.note) || 'see the route'}`);
  }
  if (waves && waves.groups) {
    for (const [group, g] of Object.entries(waves.groups)) {
      if (g.healthy === false) problems.push(`${name}: group ${group} is breached`);
    }
  }
  for (const v of route.guardrails || []) {
    if (v.tripped) {
      problems.push(`${name}: guardrail ${v.rule} tripped (${verdictValue(v.unit, v.observed)} > ` +
        `${verdictValue(v.unit, v.threshold)}, n=${v.samples})`);
    }
  }
  for (const entry of route.stack || []) {
    const trip = entry.trip;
    // A person's rollback ("manual") was a decision already taken, not news for the banner.
    if (trip && trip.rule !== 'manual' && trip.at && Date.now() - Date.parse(trip.at) < RECENT_TRIP_MS) {
      problems.push(`${name}: ${entry.version} tripped ${ago(trip.at)}: ${trip.description || trip.rule}`);
    }
  }
  return problems;
}

function renderBanner(state) {
  const banner = $('#status-banner');
  const problems = problemsOf(state);
  banner.dataset.state = problems.length ? 'wrong' : 'ok';
  $('#status-summary').textContent = problems.length
    ? `Yes: ${problems.length} problem${problems.length > 1 ? 's' : ''}`
    : 'No: every route is healthy and every instance is current.';
  const list = document.createDocumentFragment();
  for (const p of problems) list.append(el('li', null, p));
  $('#status-reasons').replaceChildren(list);
}

function renderProcess(state) {
  const p = state.process || {};
  const parts = [p.role || 'router'];
  if (p.instance) parts.push(p.instance);
  if (p.fleet) parts.push(`of fleet ${p.fleet}`);
  if (p.role === 'controller' && p.leading !== null && p.leading !== undefined) {
    parts.push(p.leading ? '(leading)' : '(standing by)');
  }
  if (p.epoch !== null && p.epoch !== undefined) parts.push(`epoch ${p.epoch}`);
  $('#process').textContent = parts.join(' ');
  const generated = $('#generated');
  generated.textContent = `updated ${new Date(state.generated_at).toLocaleTimeString()}`;
  generated.title = String(state.generated_at);
}

// ----------------------------------------------------------------------------- a route

class RouteView {
  constructor(name) {
    this.name = name;
    this.root = $('#route-template').content.firstElementChild.cloneNode(true);
    this.root.dataset.route = name;
    $('.route-name', this.root).textContent = name;
    this.colours = new Map(); // version -> palette index, stable for the page's life
    this.cells = new Map(); // instance -> grid cell
    this.gridLayout = '';
    this.pinned = null;
    this.bake = null; // {baked, bake, at, running}
    this.charts = new Map(); // metric -> {plot, box, versionsKey, readout}
    this.series = null;
    this.seriesTimer = null;
    $('.grid', this.root).addEventListener('click', (event) => {
      const cell = event.target.closest('.grid-cell');
      if (cell && cell.dataset.instance !== undefined) this.pin(cell.dataset.instance);
    });
    $('.unpin', this.root).addEventListener('click', () => this.pin(null));
    this.resize = new ResizeObserver(() => this.resizeCharts());
    this.resize.observe($('.charts', this.root));
  }

  colour(version) {
    if (!this.colours.has(version)) this.colours.set(version, this.colours.size % PALETTE_SIZE);
    return this.colours.get(version);
  }

  destroy() {
    clearInterval(this.seriesTimer);
    this.resize.disconnect();
    for (const chart of this.charts.values()) if (chart.plot) chart.plot.destroy();
    this.root.remove();
  }

  render(route, grid) {
    for (const entry of route.stack || []) this.colour(entry.version);
    const problems = routeProblems(this.name, route);
    const badge = $('.route-badge', this.root);
    badge.dataset.state = problems.length ? 'wrong' : 'ok';
    badge.textContent = problems.length ? `${problems.length} problem${problems.length > 1 ? 's' : ''}` : 'healthy';
    this.renderRollout(route);
    this.renderStack(route.stack || []);
    this.renderGuardrails(route.guardrails || []);
    this.renderGrid(grid);
    this.renderDrills(route.drills);
  }

  // How far has the rollout got? What will the next step do?
  renderRollout(route) {
    const rollout = route.rollout;
    const waves = route.waves;
    const summary = $('.rollout-summary', this.root);
    const steps = document.createDocumentFragment();
    let bake = null;
    let waiting = null;
    if (!rollout && !waves) {
      const serving = (route.stack || []).filter((e) => e.weight_percent > 0)
        .map((e) => `${e.version} ${weight(e.weight_percent)}`).join(', ');
      summary.textContent = `No rollout in progress${serving ? `: serving ${serving}` : ''}.`;
    } else if (waves && (!rollout || rollout.phase === 'waves')) {
      const back = waves.direction === 'reverse' ? ', rolling back' : '';
      summary.textContent = `Wave ${waves.wave}/${waves.waves}` +
        `${waves.group ? ` (${waves.group})` : ''}${back}: ${waves.status}`;
      bake = { baked: waves.baked, bake: waves.bake, status: waves.status };
      waiting = waves.waiting_for;
    } else if (rollout.phase === 'waves') {
      summary.textContent = `Rolling release in waves: ${rollout.status}`;
      bake = { baked: rollout.baked, bake: rollout.bake, status: rollout.status };
      waiting = rollout.waiting_for;
    } else {
      const n = (rollout.steps || []).length;
      summary.textContent = `Canary step ${rollout.step + 1}/${n}: ${weight(rollout.percent)} ` +
        `of requests, ${rollout.status}`;
      (rollout.steps || []).forEach((p, i) => {
        const li = el('li', i < rollout.step ? 'done' : i === rollout.step ? 'current' : '', `${p}%`);
        steps.append(li);
      });
      bake = { baked: rollout.baked, bake: rollout.bake, status: rollout.status };
      waiting = rollout.waiting_for;
    }
    $('.steps', this.root).replaceChildren(steps);
    this.bake = bake && bake.bake ? { ...bake, at: performance.now() } : null;
    $('.bake', this.root).hidden = !this.bake;
    this.tickBake();
    $('.waiting', this.root).textContent = waiting ? `The gate waits for: ${waiting}` : '';
    $('.note', this.root).textContent = rollout && rollout.note ? rollout.note : '';
    this.renderGroups(waves);
    this.renderBlast(route.blast_radius || {});
    $('.next-step', this.root).textContent = route.next_step || 'Nothing scheduled.';
  }

  tickBake() {
    if (!this.bake) return;
    const { baked, bake, status, at } = this.bake;
    const running = status === 'running';
    const now = Math.min(bake, (baked || 0) + (running ? (performance.now() - at) / 1000 : 0));
    $('.bake-fill', this.root).style.width = `${Math.min(100, (100 * now) / bake)}%`;
    const paused = running ? '' : ` (${status}: the bake does not run)`;
    $('.bake-text', this.root).textContent = `bake ${duration(now)} of ${duration(bake)}${paused}`;
  }

  renderGroups(waves) {
    const table = $('.groups', this.root);
    const body = document.createDocumentFragment();
    const groups = waves && waves.groups ? Object.entries(waves.groups) : [];
    for (const [group, g] of groups) {
      const tr = el('tr', group === waves.group ? 'current' : '');
      tr.dataset.group = group;
      const healthy = g.healthy !== false && waves.halted_group !== group;
      const gauge = (g.verdicts || []).filter((v) => !v.silent).map((v) =>
        `${v.rule} ${verdictValue(v.unit, v.observed)} / ${verdictValue(v.unit, v.threshold)}` +
        `${v.tripped ? ' TRIPPED' : ''}`).join('; ');
      tr.append(td(group), td(`${g.flipped}/${g.planned}`, 'flipped'),
        td(healthy ? 'healthy' : 'BREACHED', 'health', healthy ? 'healthy' : 'breached'),
        td(gauge || '(no answers yet)', 'gauge'));
      body.append(tr);
    }
    $('tbody', table).replaceChildren(body);
    table.classList.toggle('has-rows', groups.length > 0);
  }

  renderBlast(blast) {
    const bar = document.createDocumentFragment();
    const entries = Object.entries(blast).filter(([, r]) => r > 0).sort((a, b) => b[1] - a[1]);
    for (const [version, ratio] of entries) {
      const part = el('div', `blast-part vc${this.colour(version)}`, `${version} ${pct(ratio)}`);
      part.dataset.version = version;
      part.title = `${version}: ${pct(ratio)} of the requests in the last 60 s`;
      part.style.width = `${ratio * 100}%`;
      bar.append(part);
    }
    if (!entries.length) bar.append(el('span', 'muted', 'no requests in the last 60 s'));
    $('.blast', this.root).replaceChildren(bar);
  }

  renderStack(stack) {
    const body = document.createDocumentFragment();
    for (const entry of stack) {
      const tr = el('tr');
      tr.dataset.version = entry.version;
      tr.dataset.role = entry.role;
      const meta = entry.metadata || {};
      const versionCell = td('', 'version');
      versionCell.append(el('span', `swatch vc${this.colour(entry.version)}`), document.createTextNode(entry.version));
      const others = Object.entries(meta).filter(([k]) => !['author', 'commit', 'eval_set'].includes(k));
      if (others.length) versionCell.title = others.map(([k, v]) => `${k}: ${v}`).join('\n');
      const live = td(entry.live_since ? ago(entry.live_since) : '', 'live_since');
      if (entry.live_since) live.title = localTime(entry.live_since);
      const trip = entry.trip;
      const tripCell = td(trip ? `${trip.description || trip.rule}${trip.at ? ` (${ago(trip.at)})` : ''}` : '',
        'trip', 'trip');
      if (trip && trip.at) tripCell.title = localTime(trip.at);
      const digest = td('', 'digest');
      digest.append(el('code', null, entry.digest));
      tr.append(versionCell, td(entry.role.replace('_', ' '), 'role', 'role'),
        td(weight(entry.weight_percent), 'weight', 'num'), digest, td(entry.model, 'model'),
        td(meta.author ?? '', 'author'), td(meta.commit ?? '', 'commit'),
        td(meta.eval_set ?? '', 'eval_set'), live, tripCell);
      body.append(tr);
    }
    $('.stack tbody', this.root).replaceChildren(body);
  }

  renderGuardrails(verdicts) {
    const body = document.createDocumentFragment();
    for (const v of verdicts) {
      const tr = el('tr', 'guardrail');
      tr.dataset.rule = v.rule;
      tr.classList.toggle('tripped', !!v.tripped);
      tr.classList.toggle('silent', !!v.silent);
      tr.classList.toggle('waiting', !!v.waiting && !v.silent);
      const margin = td('', 'margin');
      if (v.observed !== null && v.threshold !== null && !v.silent) {
        const lower = lowerIsWorse(v.rule);
        const use = lower ? (v.observed > 0 ? v.threshold / v.observed : 1) : (v.threshold > 0 ? v.observed / v.threshold : 1);
        const bar = el('span', 'margin-bar');
        const fill = el('span', 'margin-fill');
        fill.style.width = `${Math.max(0, Math.min(1, use)) * 100}%`;
        bar.append(fill);
        const headroom = lower ? v.observed - v.threshold : v.threshold - v.observed;
        const room = v.unit === 'rate' ? `${(headroom * 100).toFixed(1)} pts`
          : v.unit === 'seconds' ? `${Math.round(headroom * 1000)}ms` : `${headroom.toFixed(2)}x`;
        margin.append(bar, document.createTextNode(headroom >= 0 ? `${room} to spare` : `${room.replace('-', '')} over`));
      }
      let status = 'ok';
      if (v.tripped) status = 'TRIPPED';
      else if (v.silent) status = 'silent: no signal on either version';
      else if (v.waiting) status = `waiting: ${v.samples}/${v.min_samples} samples`;
      tr.append(td(v.rule, 'rule'), td(verdictValue(v.unit, v.observed), 'observed', 'num'),
        td(v.threshold === null || v.threshold === undefined ? 'n/a'
          : `${lowerIsWorse(v.rule) ? '>= ' : '<= '}${verdictValue(v.unit, v.threshold)}`, 'threshold', 'num'),
        margin, td(`${v.samples} / min ${v.min_samples}`, 'samples', 'num'),
        td(v.confidence ? `${Number((v.confidence * 100).toPrecision(4))}%` : 'n/a', 'confidence', 'num'),
        td(status, 'state'));
      body.append(tr);
    }
    if (!verdicts.length) {
      const tr = el('tr');
      const cell = td('No guardrail is judging: no candidate under watch, or no rules on this route.');
      cell.colSpan = 7;
      tr.append(cell);
      body.append(tr);
    }
    $('.guardrails tbody', this.root).replaceChildren(body);
  }

  // The fleet grid: cells grouped by region, then pool. The layout is rebuilt (one
  // DocumentFragment) only when the set of instances changes; otherwise cells are updated in place.
  renderGrid(grid) {
    const sorted = grid.slice().sort((a, b) =>
      String(a.region).localeCompare(String(b.region)) || String(a.pool).localeCompare(String(b.pool)) ||
      String(a.instance).localeCompare(String(b.instance)));
    const layout = sorted.map((c) => `${c.region}\u0000${c.pool}\u0000${c.instance}`).join('\u0001');
    if (layout !== this.gridLayout) {
      this.gridLayout = layout;
      this.cells.clear();
      const fragment = document.createDocumentFragment();
      let region = null;
      let pool = null;
      let regionBox = null;
      let cellsBox = null;
      for (const c of sorted) {
        if (!regionBox || c.region !== region) {
          region = c.region;
          pool = undefined;
          regionBox = el('div', 'region');
          regionBox.append(el('h4', null, region ?? '(no region)'));
          fragment.append(regionBox);
        }
        if (c.pool !== pool) {
          pool = c.pool;
          const poolBox = el('div', 'pool');
          poolBox.append(el('span', null, pool ?? '(no pool)'));
          cellsBox = el('div', 'cells');
          poolBox.append(cellsBox);
          regionBox.append(poolBox);
        }
        const cell = el('button', 'grid-cell cell');
        cell.type = 'button';
        cell.dataset.instance = c.instance;
        cellsBox.append(cell);
        this.cells.set(c.instance, cell);
      }
      $('.grid', this.root).replaceChildren(fragment);
    }
    const counts = { ok: 0, behind: 0, refused: 0, missing: 0 };
    let pinned = null;
    for (const c of sorted) {
      counts[c.mark] = (counts[c.mark] || 0) + 1;
      this.updateCell(this.cells.get(c.instance), c);
      if (c.instance === this.pinned) pinned = c;
    }
    const parts = Object.entries(counts).filter(([, n]) => n).map(([mark, n]) => `${n} ${mark}`);
    $('.grid-count', this.root).textContent =
      `(${grid.length} instance${grid.length === 1 ? '' : 's'}${parts.length ? `: ${parts.join(', ')}` : ''})`;
    this.renderGridLegend(sorted);
    this.renderDetails(pinned);
  }

  cellRoute(c) {
    return (c.routes && c.routes[this.name]) || { served: {}, flipped: null, wave: null };
  }

  updateCell(cell, c) {
    const r = this.cellRoute(c);
    const served = Object.entries(r.served || {}).filter(([, bp]) => bp > 0).sort((a, b) => b[1] - a[1]);
    const main = served.length ? served[0][0] : '';
    let cls = `grid-cell cell ${main ? `vc${this.colour(main)}` : 'vnone'}`;
    if (served.length > 1) cls += ` mixed bc${this.colour(served[1][0])}`;
    if (c.instance === this.pinned) cls += ' pinned';
    if (cell.className !== cls) cell.className = cls;
    setData(cell, 'version', main);
    setData(cell, 'mark', c.mark);
    setData(cell, 'flipped', r.flipped ? 'true' : null);
    setData(cell, 'wave', r.wave ?? null);
    const text = r.wave !== null && r.wave !== undefined ? String(r.wave) : '';
    if (cell.textContent !== text) cell.textContent = text;
    const title = this.describeCell(c, r, served).map(([k, v]) => `${k}: ${v}`).join('\n');
    if (cell.title !== title) cell.title = title;
  }

  describeCell(c, r, served) {
    const rows = [
      ['instance', c.instance], ['region', c.region ?? 'n/a'], ['pool', c.pool ?? 'n/a'],
      ['health', c.mark], ['epoch', c.epoch ?? 'n/a'],
      ['behind by', c.behind_by === null || c.behind_by === undefined ? 'n/a' : `${c.behind_by} epoch(s)`],
      ['lag', c.lag_seconds === null || c.lag_seconds === undefined ? 'n/a' : duration(c.lag_seconds)],
      ['heartbeat', c.heartbeat_age_seconds === null || c.heartbeat_age_seconds === undefined
        ? 'n/a' : `${duration(c.heartbeat_age_seconds)} ago`],
      ['serves', served.map(([v, bp]) => `${v} ${weight(bp / 100)}`).join(', ') || 'nothing'],
      ['flipped', r.flipped === null || r.flipped === undefined ? 'n/a' : r.flipped ? 'yes' : 'no'],
      ['wave', r.wave ?? 'n/a'],
    ];
    if (c.refused) {
      rows.push(['refused', `epoch ${c.refused.epoch ?? '?'}: ${c.refused.reason ?? 'no reason given'}`]);
    }
    return rows;
  }

  renderGridLegend(sorted) {
    const seen = new Set();
    for (const c of sorted) for (const v of Object.keys(this.cellRoute(c).served || {})) seen.add(v);
    const key = [...seen].sort().join('\u0000');
    if (key === this.legendKey) return;
    this.legendKey = key;
    const legend = document.createDocumentFragment();
    for (const v of [...seen].sort()) {
      const item = el('span');
      item.append(el('span', `swatch vc${this.colour(v)}`), document.createTextNode(v));
      legend.append(item);
    }
    const sample = (mark, flipped, label, wave) => {
      const item = el('span');
      const cell = el('span', 'cell cell-sample vnone', wave || '');
      cell.dataset.mark = mark;
      if (flipped) cell.dataset.flipped = 'true';
      item.append(cell, document.createTextNode(` ${label}`));
      legend.append(item);
    };
    sample('ok', true, 'flipped (number: its wave)', '1');
    sample('behind', false, 'behind');
    sample('refused', false, 'refused');
    sample('missing', false, 'missing');
    legend.append(el('span', 'muted', 'a lower band: the second version it serves; click a cell for details'));
    $('.grid-legend', this.root).replaceChildren(legend);
  }

  pin(instance) {
    const old = this.pinned !== null ? this.cells.get(this.pinned) : null;
    if (old) old.classList.remove('pinned');
    this.pinned = this.pinned === instance ? null : instance;
    const cell = this.pinned !== null ? this.cells.get(this.pinned) : null;
    if (cell) cell.classList.add('pinned');
    const data = lastState && this.pinned !== null
      ? (lastState.grid || []).find((c) => c.instance === this.pinned) : null;
    this.renderDetails(data || null);
  }

  renderDetails(c) {
    const panel = $('.cell-details', this.root);
    if (!c) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    panel.dataset.instance = c.instance;
    $('.cell-title', panel).textContent = c.instance;
    const r = this.cellRoute(c);
    const served = Object.entries(r.served || {}).filter(([, bp]) => bp > 0).sort((a, b) => b[1] - a[1]);
    const list = document.createDocumentFragment();
    for (const [k, v] of this.describeCell(c, r, served)) {
      list.append(el('dt', null, k), el('dd', k === 'refused' || (k === 'health' && v !== 'ok') ? 'bad' : '', v));
    }
    $('dl', panel).replaceChildren(list);
  }

  renderDrills(drills) {
    const history = (drills && drills.history) || [];
    const summary = $('.drill-summary', this.root);
    if (!history.length) {
      summary.textContent = `No drill yet: run bundle-router drill ${this.name} to time a rollback.`;
    } else {
      const trend = drills.trend ? `; trend: ${drills.trend} (the last three against the three before)` : '';
      const last = history[history.length - 1];
      summary.textContent = `${history.length} drill${history.length > 1 ? 's' : ''}; median ` +
        `${duration(drills.median_seconds)}; last ${duration(last.seconds)} (${ago(last.at)})${trend}`;
    }
    const max = Math.max(0, ...history.map((d) => d.seconds || 0));
    const bars = document.createDocumentFragment();
    for (const d of history) {
      const bar = el('div', 'drill-bar');
      bar.style.height = max > 0 ? `${Math.max(3, (60 * (d.seconds || 0)) / max)}px` : '2px';
      bar.title = `${localTime(d.at)}: ${duration(d.seconds)}`;
      bars.append(bar);
    }
    $('.drill-bars', this.root).replaceChildren(bars);
    $('.drill-bars', this.root).hidden = !history.length;
  }

  // ------------------------------------------------------------------------ time series

  async refreshSeries() {
    try {
      const response = await fetch(SERIES_URL + encodeURIComponent(this.name), { cache: 'no-store' });
      if (!response.ok) throw new Error(`${SERIES_URL}${this.name} answered ${response.status}`);
      this.series = await response.json();
      this.renderCharts();
    } catch (error) {
      showLoadError(`Could not load the time series of ${this.name}: ${error.message}; retrying.`);
    }
  }

  renderCharts() {
    const series = this.series;
    if (!series || typeof uPlot === 'undefined') return;
    const versions = Object.keys(series.versions || {});
    for (const v of versions) this.colour(v);
    const xs = [...new Set(versions.flatMap((v) => series.versions[v].t || []))].sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    this.marks = (series.marks || []).map((m) => ({ ...m, kind: markKind(m.action) }));
    this.renderLegend(versions);
    const box = $('.charts', this.root);
    for (const [metric, label, format, axisFormat] of METRICS) {
      let chart = this.charts.get(metric);
      if (!chart) {
        const holder = el('div', 'chart');
        holder.dataset.metric = metric;
        const head = el('h4', null, label);
        const readout = el('span', 'muted readout');
        head.append(document.createTextNode(' '), readout);
        holder.append(head);
        box.append(holder);
        chart = { holder, readout, plot: null, versionsKey: '' };
        this.charts.set(metric, chart);
      }
      const columns = versions.map((v) => {
        const column = new Array(xs.length).fill(null);
        const data = series.versions[v];
        (data.t || []).forEach((t, i) => { column[index.get(t)] = (data[metric] || [])[i] ?? null; });
        return column;
      });
      const hasData = columns.some((c) => c.some((y) => y !== null));
      const versionsKey = hasData ? versions.join('\u0000') : '';
      if (!hasData) {
        if (chart.plot) chart.plot.destroy();
        chart.plot = null;
        chart.versionsKey = '';
        if (!chart.empty) {
          chart.empty = el('div', 'empty', 'no data in the last hour');
          chart.holder.append(chart.empty);
        }
        continue;
      }
      if (chart.empty) {
        chart.empty.remove();
        chart.empty = null;
      }
      const data = [xs, ...columns];
      if (chart.plot && chart.versionsKey === versionsKey) {
        chart.plot.setData(data);
        continue;
      }
      if (chart.plot) chart.plot.destroy();
      chart.versionsKey = versionsKey;
      chart.plot = this.makePlot(chart, versions, data, format, axisFormat, SPARSE.has(metric));
    }
  }

  makePlot(chart, versions, data, format, axisFormat, sparse) {
    const view = this;
    const drawMarks = (u) => {
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      ctx.save();
      ctx.lineWidth = Math.max(1, devicePixelRatio);
      for (const m of view.marks || []) {
        const x = u.valToPos(m.t, 'x', true);
        if (x < left || x > left + width) continue;
        ctx.strokeStyle = cssVar(MARK_KINDS.find(([k]) => k === m.kind)[2]);
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
      }
      ctx.restore();
    };
    const readout = (u) => {
      const i = u.cursor.idx;
      if (i === null || i === undefined) {
        chart.readout.textContent = '';
        return;
      }
      const at = new Date(u.data[0][i] * 1000).toLocaleTimeString();
      const values = versions.map((v, k) => `${v} ${format(u.data[k + 1][i])}`).join(' · ');
      const marks = (view.marks || []).filter((m) => Math.abs(m.t - u.data[0][i]) <= 5)
        .map((m) => `${m.action}${m.version ? ` ${m.version}` : ''}`).join(', ');
      chart.readout.textContent = `${at}: ${values}${marks ? ` · ${marks}` : ''}`;
    };
    const options = {
      width: Math.max(200, chart.holder.clientWidth - 8),
      height: 130,
      legend: { show: false },
      cursor: { sync: { key: `route:${this.name}` }, points: { size: 5 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      axes: [
        { size: 36, font: '11px system-ui', ticks: { size: 3 } },
        { size: 50, font: '11px system-ui', ticks: { size: 3 }, values: (u, ticks) => ticks.map(axisFormat) },
      ],
      series: [{}, ...versions.map((v) => ({
        label: v, stroke: cssVar(`--v${this.colour(v)}`), width: 1.5, points: { show: false },
        spanGaps: sparse, // feedback and tool calls come now and then: join their samples
      }))],
      hooks: { draw: [drawMarks], setCursor: [readout] },
    };
    return new uPlot(options, data, chart.holder);
  }

  renderLegend(versions) {
    const kinds = new Set((this.marks || []).map((m) => m.kind));
    const key = `${versions.join('\u0000')}|${[...kinds].join(',')}`;
    if (key === this.chartLegendKey) return;
    this.chartLegendKey = key;
    const legend = document.createDocumentFragment();
    for (const v of versions) {
      const item = el('span');
      item.dataset.version = v;
      item.append(el('span', `swatch vc${this.colour(v)}`), document.createTextNode(v));
      legend.append(item);
    }
    for (const [kind, label] of MARK_KINDS) {
      if (!kinds.has(kind)) continue;
      const item = el('span');
      item.append(el('span', `mark-key k-${kind}`), document.createTextNode(`${label} (audit mark)`));
      legend.append(item);
    }
    if (!versions.length) legend.append(el('span', 'muted', 'no samples yet: the recorder samples every 10 s'));
    $('.legend', this.root).replaceChildren(legend);
  }

  resizeCharts() {
    for (const chart of this.charts.values()) {
      if (!chart.plot) continue;
      const width = Math.max(200, chart.holder.clientWidth - 8);
      if (width !== chart.plot.width) chart.plot.setSize({ width, height: 130 });
    }
  }
}

function setData(node, key, value) {
  if (value === null || value === undefined || value === '') {
    if (key in node.dataset) delete node.dataset[key];
  } else if (node.dataset[key] !== String(value)) {
    node.dataset[key] = String(value);
  }
}

// -------------------------------------------------------------------------------- audit

function renderAudit(audit) {
  const chain = $('#chain');
  const check = audit && audit.chain;
  if (!check || check.ok === null || check.ok === undefined) {
    chain.dataset.ok = 'unknown';
    chain.textContent = 'Chain not checked yet.';
  } else if (check.ok) {
    chain.dataset.ok = 'true';
    chain.textContent = `Chain verified: ${check.records} record(s), every hash intact.`;
  } else {
    chain.dataset.ok = 'false';
    chain.textContent = `Chain BROKEN after ${check.records} record(s): ${check.problem || 'unknown problem'}. ` +
      'Check it with bundle-router audit --verify.';
  }
  const records = ((audit && audit.records) || []).slice().sort((a, b) => b.seq - a.seq).slice(0, 50);
  const list = document.createDocumentFragment();
  const fresh = seenSeqs !== null;
  const seen = new Set();
  for (const r of records) {
    seen.add(r.seq);
    const li = el('li', fresh && !seenSeqs.has(r.seq) ? 'fresh' : '');
    li.dataset.seq = String(r.seq);
    if (r.route) li.dataset.route = r.route;
    li.dataset.action = r.action;
    const at = el('span', 'at', localTime(r.at));
    at.title = String(r.at);
    li.append(el('span', 'seq', r.seq), at, el('span', 'route', r.route ?? '(fleet)'),
      el('span', 'action', r.action), el('span', 'actor', `by ${r.actor ?? '?'}`), el('span', 'reason', r.reason ?? ''));
    list.append(li);
  }
  if (!records.length) list.append(el('li', 'muted', 'No audit record yet.'));
  $('#audit').replaceChildren(list);
  seenSeqs = seen;
}

// ------------------------------------------------------------------------------- render

function render(state) {
  const began = performance.now();
  lastState = state;
  renderProcess(state);
  renderBanner(state);
  const main = $('#routes');
  const names = Object.keys(state.routes || {});
  for (const [name, view] of views) {
    if (!names.includes(name)) {
      view.destroy();
      views.delete(name);
    }
  }
  names.forEach((name, i) => {
    let view = views.get(name);
    if (!view) {
      view = new RouteView(name);
      views.set(name, view);
      view.refreshSeries();
      view.seriesTimer = setInterval(() => view.refreshSeries(), SERIES_EVERY_MS);
    }
    if (main.children[i] !== view.root) main.insertBefore(view.root, main.children[i] || null);
    view.render(state.routes[name], state.grid || []);
  });
  renderAudit(state.audit);
  renderCount += 1;
  document.body.dataset.renderCount = String(renderCount);
  document.body.dataset.renderedAt = String(Date.now());
  document.body.dataset.renderMs = (performance.now() - began).toFixed(1);
}

function showLoadError(message) {
  const node = $('#load-error');
  node.hidden = !message;
  node.textContent = message || '';
}

// ---------------------------------------------------------------------------------- live

let fetching = false;
let again = false;

async function refreshState() {
  if (fetching) {
    again = true; // one more fetch after this one: the change may have come after its answer
    return;
  }
  fetching = true;
  try {
    do {
      again = false;
      const response = await fetch(STATE_URL, { cache: 'no-store' });
      if (!response.ok) throw new Error(`${STATE_URL} answered ${response.status}`);
      render(await response.json());
      showLoadError(null);
    } while (again);
  } catch (error) {
    showLoadError(`Could not load ${STATE_URL}: ${error.message}; retrying.`);
  } finally {
    fetching = false;
  }
}

let source = null;
let everOpen = false; // before the first open the page is connecting, after it reconnecting

function setConnection(state) {
  const node = $('#connection');
  if (node.dataset.state === state) return;
  node.dataset.state = state;
  node.textContent = state === 'live' ? 'live' : state === 'connecting' ? 'connecting...' : 'reconnecting...';
}

function connect() {
  source = new EventSource(EVENTS_URL);
  source.addEventListener('open', () => {
    everOpen = true;
    setConnection('live');
    refreshState(); // changes made while the stream was down
  });
  source.addEventListener('change', () => refreshState());
  source.addEventListener('error', () => {
    setConnection(everOpen ? 'reconnecting' : 'connecting');
    if (source.readyState === EventSource.CLOSED) {
      // EventSource gave up (e.g. an error status): start a new one after a pause.
      source = null;
      setTimeout(connect, 2000);
    }
  });
}

function tick() {
  if (source && source.readyState === EventSource.OPEN) setConnection('live');
  else setConnection(everOpen ? 'reconnecting' : 'connecting');
  for (const view of views.values()) view.tickBake();
}

function start() {
  connect();
  refreshState();
  setInterval(refreshState, STATE_EVERY_MS);
  setInterval(tick, 1000);
}

start();
