// graphview.js: draws a laid-out graph (graph.js) as SVG, with zoom and pan (d3-zoom), a tooltip
// on hover or keyboard focus, and a click (or Enter) on a member to branch from it. Exports the
// graph as a standalone SVG or a PNG: the drawing's styles live inside the <svg>, so a saved copy
// looks the same as the page.

import { select } from 'd3-selection';
import { zoom, zoomIdentity } from 'd3-zoom';
import { promptLabel, promptSub, tokenLabel, probLabel } from './graph.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

// Member colours by index in the set, the terminal's hues darkened to read on white (WCAG AA).
export const GRAPH_STYLE = `
  .graph-bg { fill: #ffffff; }
  text { font-family: 'DejaVu Sans Mono', ui-monospace, monospace; fill: #1f2328; }
  .tok { font-size: 13px; }
  .prob, .sub { font-size: 11px; fill: #57606a; }
  .node rect { fill: #f6f8fa; stroke: #8c959f; stroke-width: 1.2; }
  .node.prompt rect { fill: #eef1f5; stroke: #57606a; }
  .node.branch rect { fill: #f3efff; }
  .node.c0 rect { stroke: #1a7f37; } .node.c1 rect { stroke: #9a6700; } .node.c2 rect { stroke: #0969da; }
  .node.c3 rect { stroke: #8250df; } .node.c4 rect { stroke: #1b7c83; } .node.c5 rect { stroke: #cf222e; }
  .node.set rect { stroke-width: 2; }
  .node.pruned rect { fill: #fff1f0; stroke: #cf222e; stroke-dasharray: 4 3; }
  .node.pruned .tok { text-decoration: line-through; fill: #8c2f2f; }
  .node.pruned .prob { fill: #a40e26; }
  .node.token { cursor: pointer; }
  .node.token:focus { outline: none; }
  .node.token:focus rect, .node.token:hover rect { stroke: #0550ae; stroke-width: 2.5; }
  .dist circle { fill: #ffffff; stroke: #57606a; stroke-width: 1.2; }
  .dist text { font-size: 9px; fill: #424a53; }
  .dist.eos circle { fill: #fff8c5; }
  .edge { fill: none; stroke-linecap: round; }
  .e-prefill, .e-select { stroke: #8c959f; }
  .e-feed { stroke: #6e8fbf; }
  .e-prune { stroke: #cf222e; stroke-dasharray: 5 4; stroke-width: 1.2; opacity: 0.55; }
  .edge.hl { stroke: #0550ae; opacity: 1; }
`;

function el(tag, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function fmt(p, digits = 4) {
  return typeof p === 'number' ? p.toFixed(digits) : '–';
}

// container: an element sized by the page. onBranch(runId, step, member): a member was chosen.
// runLabel(runId): the name of a run in tooltips ("run 1", "branch 2").
export function createGraphView(container, { onBranch, runLabel }) {
  const svg = el('svg', { class: 'graph', tabindex: '0', role: 'group', 'aria-label': 'Graph of the run: members by step; +/- zoom, arrows pan, 0 fits' });
  const defs = el('defs', {}, svg);
  el('style', {}, defs).textContent = GRAPH_STYLE;
  const viewport = el('g', { class: 'viewport' }, svg);
  container.appendChild(svg);
  const tip = document.createElement('div');
  tip.className = 'tooltip';
  tip.setAttribute('role', 'tooltip');
  tip.id = 'graph-tooltip';
  tip.hidden = true;
  container.appendChild(tip);

  let layout = null;
  let follow = true; // keep the newest steps in view until the user zooms or pans
  const zoomer = zoom()
    .scaleExtent([0.05, 4])
    .on('zoom', (ev) => {
      viewport.setAttribute('transform', ev.transform.toString());
      if (ev.sourceEvent) follow = false;
      hideTip();
    });
  select(svg).call(zoomer).on('dblclick.zoom', null);

  // Keyboard: +/- zoom, arrows pan, 0 fits.
  container.addEventListener('keydown', (ev) => {
    const pan = 60;
    const moves = { ArrowLeft: [pan, 0], ArrowRight: [-pan, 0], ArrowUp: [0, pan], ArrowDown: [0, -pan] };
    if (ev.key === '+' || ev.key === '=') select(svg).call(zoomer.scaleBy, 1.25);
    else if (ev.key === '-') select(svg).call(zoomer.scaleBy, 0.8);
    else if (ev.key === '0') fit();
    else if (moves[ev.key]) select(svg).call(zoomer.translateBy, ...moves[ev.key]);
    else return;
    follow = false;
    ev.preventDefault();
  });

  function render(newLayout) {
    layout = newLayout;
    viewport.replaceChildren();
    el('rect', { class: 'graph-bg', x: 0, y: 0, width: layout.width, height: layout.height }, viewport);
    const edgeLayer = el('g', { class: 'edges' }, viewport);
    const nodeLayer = el('g', { class: 'nodes' }, viewport);

    const edgeEls = new Map(); // node id -> its edges' elements, for highlighting
    const feedShare = new Map();
    for (const e of layout.edges) {
      const width = e.kind === 'prune' ? 1.2 : 0.8 + 3.5 * Math.min(1, Math.max(0, e.weight));
      const p = el('path', { class: `edge e-${e.kind}`, d: e.d, 'stroke-width': width.toFixed(2) }, edgeLayer);
      for (const id of [e.source, e.target]) {
        if (!edgeEls.has(id)) edgeEls.set(id, []);
        edgeEls.get(id).push(p);
      }
      if (e.kind === 'feed') feedShare.set(e.source, e.weight);
    }
    const setSize = new Map();
    for (const n of layout.nodes) if (n.kind === 'token') setSize.set(`${n.run}:${n.step}`, (setSize.get(`${n.run}:${n.step}`) ?? 0) + 1);

    for (const n of layout.nodes) {
      const g = el('g', { transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})` }, nodeLayer);
      if (n.kind === 'dist') {
        g.setAttribute('class', `node dist${n.eos ? ' eos' : ''}`);
        el('circle', { cx: n.width / 2, cy: n.height / 2, r: n.width / 2 }, g);
        const t = el('text', { x: n.width / 2, y: n.height / 2 + 3, 'text-anchor': 'middle' }, g);
        t.textContent = n.eos ? 'EOS' : `D${n.step}`;
        continue;
      }
      el('rect', { width: n.width, height: n.height, rx: 5 }, g);
      if (n.kind === 'prompt') {
        g.setAttribute('class', 'node prompt');
        el('text', { class: 'tok', x: 8, y: 18 }, g).textContent = promptLabel(n);
        el('text', { class: 'sub', x: 8, y: 35 }, g).textContent = promptSub(n);
        continue;
      }
      const inSet = setSize.get(`${n.run}:${n.step}`) > 1;
      const classes = ['node', 'token'];
      if (inSet) classes.push('set', `c${n.member % 6}`);
      if (n.pruned) classes.push('pruned');
      if (n.run !== 0) classes.push('branch');
      g.setAttribute('class', classes.join(' '));
      g.setAttribute('tabindex', '0');
      g.setAttribute('role', 'button');
      g.setAttribute('aria-describedby', 'graph-tooltip');
      g.setAttribute('aria-label', `step ${n.step} member ${n.member}: ${JSON.stringify(n.text)}, probability ${fmt(n.probability, 3)}${n.pruned ? `, pruned at step ${n.pruned_at_step}` : ''}. Enter continues from it.`);
      g.dataset.run = n.run;
      g.dataset.step = n.step;
      g.dataset.member = n.member;
      g.dataset.tokenId = n.token_id;
      if (n.pruned) g.dataset.prunedAt = n.pruned_at_step;
      el('text', { class: 'tok', x: 8, y: 17 }, g).textContent = tokenLabel(n);
      el('text', { class: 'prob', x: 8, y: 32 }, g).textContent = probLabel(n);

      const highlight = (on) => (edgeEls.get(n.id) ?? []).forEach((p) => p.classList.toggle('hl', on));
      const show = () => {
        highlight(true);
        showTip(g, tooltipHtml(n, feedShare.get(n.id)));
      };
      const hide = () => {
        highlight(false);
        hideTip();
      };
      g.addEventListener('pointerenter', show);
      g.addEventListener('pointerleave', hide);
      g.addEventListener('focus', show);
      g.addEventListener('blur', hide);
      g.addEventListener('click', () => onBranch(n.run, n.step, n.member));
      g.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          onBranch(n.run, n.step, n.member);
        }
      });
    }
    if (follow) followView();
  }

  function tooltipHtml(n, share) {
    const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
    const rows = [
      ['token', `${esc(JSON.stringify(n.text))} (id ${n.token_id})`],
      ['step', `${n.step}, member ${n.member} in selection order`],
      ['probability', fmt(n.probability, 6)],
    ];
    if (share !== undefined) rows.push([`share of D${n.step + 1}`, fmt(share, 4)]);
    rows.push(['state', n.pruned ? `pruned by the pass at step ${n.pruned_at_step}` : 'alive']);
    const scores = n.scores ?? [];
    if (scores.length === 0) rows.push(['pruning score', 'never scored']);
    for (const s of scores) {
      const who = scores.some((o) => o.run !== s.run) ? ` (${esc(runLabel(s.run))})` : '';
      rows.push([`score at step ${s.atStep}${who}`, `${fmt(s.score, 5)} ${s.pruned ? '(pruned)' : '(kept)'}`]);
    }
    return `<table>${rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join('')}</table>
      <p>Click or press Enter to continue from this member.</p>`;
  }

  function showTip(g, html) {
    tip.innerHTML = html;
    tip.hidden = false;
    const box = container.getBoundingClientRect();
    const r = g.getBoundingClientRect();
    let left = r.right - box.left + 8;
    if (left + tip.offsetWidth > box.width) left = Math.max(4, r.left - box.left - tip.offsetWidth - 8);
    tip.style.left = `${left}px`;
    tip.style.top = `${Math.max(4, Math.min(r.top - box.top, box.height - tip.offsetHeight - 4))}px`;
  }
  function hideTip() {
    tip.hidden = true;
  }

  // Fit the whole graph into the view (the Fit button, key 0).
  function fit() {
    if (!layout) return;
    const w = svg.clientWidth || 800;
    const h = svg.clientHeight || 400;
    const k = Math.min(1.25, w / layout.width, h / layout.height);
    place(k, (w - layout.width * k) / 2, (h - layout.height * k) / 2);
  }

  // While following a run: the whole graph when it fits at a readable scale; otherwise its
  // height (at most at full size, at least at 0.6) with the newest steps, on the right, in view.
  function followView() {
    if (!layout) return;
    const w = svg.clientWidth || 800;
    const h = svg.clientHeight || 400;
    const all = Math.min(1.25, w / layout.width, h / layout.height);
    if (all >= 0.8) return fit();
    const k = Math.max(0.6, Math.min(1, h / layout.height));
    place(k, Math.min(0, w - layout.width * k - 8), (h - layout.height * k) / 2);
  }

  function place(k, x, y) {
    select(svg).call(zoomer.transform, zoomIdentity.translate(x, y).scale(k));
  }

  function zoomBy(f) {
    follow = false;
    select(svg).call(zoomer.scaleBy, f);
  }

  // The graph as a standalone SVG document (the whole graph, not the zoomed view).
  function svgText() {
    if (!layout) return null;
    const clone = svg.cloneNode(true);
    clone.setAttribute('xmlns', SVG_NS);
    clone.setAttribute('viewBox', `0 0 ${layout.width} ${layout.height}`);
    clone.setAttribute('width', Math.ceil(layout.width));
    clone.setAttribute('height', Math.ceil(layout.height));
    for (const a of ['tabindex', 'role', 'aria-label', 'class']) clone.removeAttribute(a);
    clone.querySelector('.viewport').removeAttribute('transform');
    clone.querySelectorAll('[tabindex]').forEach((e) => {
      e.removeAttribute('tabindex');
      e.removeAttribute('aria-describedby');
    });
    return new XMLSerializer().serializeToString(clone);
  }

  // The same as a PNG Blob, at twice the size where the canvas allows it.
  async function pngBlob() {
    const text = svgText();
    if (!text) return null;
    const url = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
    try {
      const img = new Image();
      img.src = url;
      await img.decode();
      const scale = Math.min(2, 16000 / layout.width, 16000 / layout.height);
      const canvas = document.createElement('canvas');
      canvas.width = Math.ceil(layout.width * scale);
      canvas.height = Math.ceil(layout.height * scale);
      const ctx = canvas.getContext('2d');
      ctx.scale(scale, scale);
      ctx.drawImage(img, 0, 0, layout.width, layout.height);
      return await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  function clear() {
    layout = null;
    viewport.replaceChildren();
    hideTip();
  }

  return {
    render,
    fit,
    zoomBy,
    clear,
    svgText,
    pngBlob,
    setFollow(on) {
      follow = on;
    },
  };
}
