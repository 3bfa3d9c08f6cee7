// text.js: the two texts of a run, as the CLI writes them (design section 7, docs/tempo.md).
//
// Bracket text: the prompt, then per step its single member, or [a/b/c] over the members in
// selection order, each coloured by its index in the set (green, yellow, blue, magenta, cyan,
// red, repeating, as on a terminal; a one-member step is not coloured). Pruned members are left
// out, as in `generated_text`; the page can also show them struck through, which is what the
// terminal showed before they were pruned.
// Clean text: the prompt, then per step the alive member with the highest selection probability
// (the first alive one: members are in selection order).

export const MEMBER_COLOURS = ['green', 'yellow', 'blue', 'magenta', 'cyan', 'red'];

// Segments: {text, colour (index into MEMBER_COLOURS, or null), pruned, step, member, tokenId,
// kind: 'prompt' | 'member' | 'mark'}. The page renders them as spans; tests join their texts.
export function bracketSegments(prompt, steps, { showPruned = false, showIds = false } = {}) {
  const out = [{ kind: 'prompt', text: prompt ?? '' }];
  const mark = (text) => out.push({ kind: 'mark', text });
  for (const s of steps) {
    if (!s) continue;
    const shown = s.tokens
      .map((t, j) => ({ t, j }))
      .filter(({ t }) => showPruned || !t.pruned);
    const bracket = shown.length > 1;
    if (bracket) mark('[');
    shown.forEach(({ t, j }, i) => {
      if (i > 0) mark('/');
      out.push({
        kind: 'member',
        text: t.text + (showIds ? `(${t.token_id})` : ''),
        // The terminal colours a member by its index in the set (src/output/text.c).
        colour: bracket ? j % MEMBER_COLOURS.length : null,
        pruned: t.pruned,
        step: s.step,
        member: j,
        tokenId: t.token_id,
      });
    });
    if (bracket) mark(']');
  }
  return out;
}

export function bracketText(prompt, steps, opts) {
  return bracketSegments(prompt, steps, opts).map((s) => s.text).join('');
}

export function cleanText(prompt, steps) {
  let text = prompt ?? '';
  for (const s of steps) {
    if (!s) continue;
    const best = s.tokens.find((t) => !t.pruned) ?? s.tokens[0];
    if (best) text += best.text;
  }
  return text;
}
