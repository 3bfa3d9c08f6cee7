// graph.js: the structure of a run as a graph, several runs (a run and its branches) as one
// graph, and its left-to-right layout by dagre. No DOM here: graphview.js draws the result.
//
// The structure is the server's (docs/server.md, "graph"): the prompt feeds D_0; each
// distribution D_k selects the members s{k}m{j} of step k's set (edge weight: the probability);
// each member of a fed set feeds D_{k+1} (weight: its share of the mixture); a pruned member has a
// "prune" edge to the distribution of the pass that pruned it. While a run streams, the same graph
// is built here from its steps; the server's own graph replaces it when the record arrives.

import dagre from '@dagrejs/dagre';
import { line, curveBasis } from 'd3-shape';
import { memberKey } from './run.js';

// The graph of one run, in the server's shape: { nodes: [...], edges: [...] }.
export function runGraph(run) {
  if (run.record?.graph) return run.record.graph;
  const nodes = [{ id: 'prompt', kind: 'prompt', text: run.prompt ?? '', n_tokens: run.nPromptTokens }];
  const edges = [];
  const steps = run.steps.filter(Boolean);
  if (steps.length > 0) edges.push({ source: 'prompt', target: 'd0', kind: 'prefill', weight: 1 });
  for (const s of steps) {
    nodes.push({ id: `d${s.step}`, kind: 'dist', step: s.step });
    const total = s.tokens.reduce((a, t) => a + t.probability, 0);
    s.tokens.forEach((t, j) => {
      const id = memberKey(s.step, j);
      nodes.push({ id, kind: 'token', step: s.step, member: j, ...t });
      edges.push({ source: `d${s.step}`, target: id, kind: 'select', weight: t.probability });
      // A set is fed when the next one is selected: its members feed that next distribution.
      if (steps.length > s.step + 1) edges.push({ source: id, target: `d${s.step + 1}`, kind: 'feed', weight: t.probability / total });
      // The pass that fed step a prunes before step a+1 is selected: until then D_{a+1} is not
      // drawn, and neither is the edge.
      if (t.pruned && t.pruned_at_step !== null && t.pruned_at_step + 1 < steps.length)
        edges.push({ source: id, target: `d${t.pruned_at_step + 1}`, kind: 'prune', weight: t.prune_score ?? 0 });
    });
  }
  return { nodes, edges };
}

// The graph of a run and all its branches, drawn as one tree. A branch's prompt, its replayed
// steps and its chosen member are its parent's nodes; what it generated after them hangs off the
// chosen member. Node ids become "r{run}:{id}" of the run that first produced the node.
//
// Returns { nodes, edges }: each node has `run` (the run that owns it: clicking it branches from
// that run), `key` (its id in that run's graph) and `scores` (every pruning score it received, from
// any run: [{ run, atStep, score, pruned }]).
export function composeGraph(runs) {
  const byId = new Map(runs.map((r) => [r.id, r]));
  const nodes = new Map();
  const edges = new Map();

  // Where a run's node lives in the combined graph.
  function place(run, id) {
    const p = run.parent;
    if (p) {
      const node = /^s(\d+)m(\d+)$/.exec(id);
      const dist = /^d(\d+)$/.exec(id);
      if (id === 'prompt') return place(byId.get(p.run), id);
      if (dist && Number(dist[1]) <= p.step) return place(byId.get(p.run), id);
      if (node && Number(node[1]) < p.step) return place(byId.get(p.run), id);
      if (node && Number(node[1]) === p.step) return place(byId.get(p.run), memberKey(p.step, p.member));
    }
    return `r${run.id}:${id}`;
  }

  for (const run of runs) {
    const g = runGraph(run);
    for (const n of g.nodes) {
      const id = place(run, n.id);
      if (!nodes.has(id)) nodes.set(id, { ...n, id, run: run.id, key: n.id, scores: [] });
    }
    for (const e of g.edges) {
      const source = place(run, e.source);
      const target = place(run, e.target);
      const id = `${source}>${target}:${e.kind}`;
      if (!edges.has(id)) edges.set(id, { ...e, id, source, target, run: run.id });
    }
    // Scores: a branch's replay repeats its parent's passes before the branch point; keep only the
    // passes that are its own.
    const from = run.parent ? run.parent.step : -1;
    for (const [key, list] of run.scores) {
      const node = nodes.get(place(run, key));
      if (!node) continue;
      for (const s of list) if (s.atStep >= from) node.scores.push({ run: run.id, ...s });
    }
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

// Node sizes: measure(text, kind) gives a label's width in px ('token', 'prob' or 'prompt' font).
export const NODE_HEIGHT = 40;
export const DIST_SIZE = 22;
const PAD = 8;

export function nodeSize(n, measure) {
  if (n.kind === 'dist') return { width: DIST_SIZE, height: DIST_SIZE };
  if (n.kind === 'prompt') {
    return { width: Math.max(measure(promptLabel(n), 'prompt'), measure(promptSub(n), 'prob')) + 2 * PAD, height: NODE_HEIGHT + 4 };
  }
  return { width: Math.max(measure(tokenLabel(n), 'token'), measure(probLabel(n), 'prob'), 24) + 2 * PAD, height: NODE_HEIGHT };
}

export function promptLabel(n) {
  const t = (n.text ?? '').replace(/\s+/g, ' ');
  return t.length > 40 ? `${t.slice(0, 39)}\u2026` : t;
}
export function promptSub(n) {
  return n.n_tokens ? `prompt, ${n.n_tokens} tokens` : 'prompt';
}
export function tokenLabel(n) {
  const t = n.text.replace(/ /g, '\u00b7').replace(/\n/g, '\u21b5').replace(/\t/g, '\u21e5') || '\u2205';
  return t.length > 24 ? `${t.slice(0, 23)}\u2026` : t;
}
export function probLabel(n) {
  const p = n.probability.toFixed(3);
  return n.pruned ? `${p} \u2715${n.pruned_at_step}` : p;
}

// Lay the graph out left to right with dagre. Returns { nodes: [{...node, x, y, width, height}],
// edges: [{...edge, d}], width, height } (x, y: node centres; d: the edge's SVG path).
//
// Only the chain prompt -> D_0 -> members -> D_1 -> ... is laid out. dagre orders the nodes of a
// column to reduce crossings; a set reads best in selection order (the most probable member on
// top), so each set's members then take its places in that order, and the edges between
// neighbouring columns are drawn for those places (an S from the right side of one node to the
// left side of the next). Prune edges would drag the columns apart if dagre routed them; they are
// drawn as arcs below the graph instead, from the pruned member down and over to the
// distribution of the pass that pruned it.
export function layoutGraph(graph, measure) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: 'LR', nodesep: 10, ranksep: 28, edgesep: 6, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) g.setNode(n.id, { ...nodeSize(n, measure) });
  for (const e of graph.edges) if (e.kind !== 'prune') g.setEdge(e.source, e.target, {}, e.id);
  dagre.layout(g);
  const nodes = graph.nodes.map((n) => {
    const l = g.node(n.id);
    return { ...n, x: l.x, y: l.y, width: l.width, height: l.height };
  });

  const sets = new Map();
  for (const n of nodes) {
    if (n.kind !== 'token') continue;
    const key = `${n.run}:${n.step}`;
    if (!sets.has(key)) sets.set(key, []);
    sets.get(key).push(n);
  }
  for (const members of sets.values()) {
    const ys = members.map((n) => n.y).sort((a, b) => a - b);
    members.sort((a, b) => a.member - b.member).forEach((n, i) => (n.y = ys[i]));
  }

  let { width, height } = g.graph();
  const at = new Map(nodes.map((n) => [n.id, n]));
  const sCurve = line().curve(curveBasis);
  const edges = graph.edges.map((e) => {
    const s = at.get(e.source);
    const t = at.get(e.target);
    if (e.kind === 'prune') {
      const x0 = s.x, y0 = s.y + s.height / 2;
      const x1 = t.x, y1 = t.y + t.height / 2;
      const bottom = Math.max(y0, y1) + Math.min(90, 16 + 0.15 * Math.abs(x1 - x0));
      height = Math.max(height, bottom + 4); // the arc's lowest point is 3/4 of the way down
      return { ...e, d: `M${x0},${y0}C${x0},${bottom} ${x1},${bottom} ${x1},${y1}` };
    }
    const x0 = s.x + s.width / 2, x1 = t.x - t.width / 2, mid = (x0 + x1) / 2;
    return { ...e, d: sCurve([[x0, s.y], [mid, s.y], [mid, t.y], [x1, t.y]]) };
  });
  return { nodes, edges, width, height };
}
