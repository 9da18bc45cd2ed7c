/**
 * Text splicing helpers for surgical XML edits: every change is a
 * replacement of one span of the original text, so whatever is outside the
 * spans stays byte-for-byte as it was.
 */
import { escapeXml, type XmlAttr, type XmlDocument, type XmlElement } from './xml.js';

export interface Splice {
  start: number;
  end: number;
  text: string;
}

/** Applies non-overlapping splices to `text`. */
export function applySplices(text: string, splices: Splice[]): string {
  const sorted = [...splices].sort((a, b) => a.start - b.start || a.end - b.end);
  let out = '';
  let at = 0;
  for (const s of sorted) {
    if (s.start < at) throw new Error(`overlapping XML edits at offset ${s.start}`);
    out += text.slice(at, s.start) + s.text;
    at = s.end;
  }
  return out + text.slice(at);
}

/** Formatting conventions read from the document, used for inserted markup. */
export interface Style {
  nl: string;
  quote: '"' | "'";
  /** One level of indentation. */
  unit: string;
}

/** Reads the document's newline, preferred attribute quote and indent unit. */
export function detectStyle(doc: XmlDocument): Style {
  const nl = doc.text.includes('\r\n') ? '\r\n' : '\n';
  let single = 0;
  let double = 0;
  const walk = (el: XmlElement): void => {
    for (const a of el.attrs) a.quote === "'" ? single++ : double++;
    el.children.forEach(walk);
  };
  walk(doc.root);
  const quote = double > single ? '"' : "'";
  let unit = '  ';
  const rootIndent = indentOf(doc.text, doc.root.start) ?? '';
  for (const c of doc.root.children) {
    const ci = indentOf(doc.text, c.start);
    if (ci !== undefined && ci.length > rootIndent.length && ci.startsWith(rootIndent)) {
      unit = ci.slice(rootIndent.length);
      break;
    }
  }
  return { nl, quote, unit };
}

/** Offset of the start of the line holding `offset`. */
export function lineStart(text: string, offset: number): number {
  return text.lastIndexOf('\n', offset - 1) + 1;
}

/**
 * The whitespace before `offset` on its line when only whitespace precedes
 * it there (the element starts its own line), else undefined.
 */
export function indentOf(text: string, offset: number): string | undefined {
  const ls = lineStart(text, offset);
  const before = text.slice(ls, offset);
  return /^[ \t]*$/.test(before) ? before : undefined;
}

/** True when only whitespace follows `offset` up to the end of its line. */
function restOfLineBlank(text: string, offset: number): boolean {
  const nl = text.indexOf('\n', offset);
  return /^[ \t\r]*$/.test(text.slice(offset, nl < 0 ? text.length : nl));
}

/** Indentation for a child of `el` (from existing children, else el's + unit). */
export function childIndent(text: string, el: XmlElement, style: Style): string | undefined {
  for (const c of el.children) {
    const ci = indentOf(text, c.start);
    if (ci !== undefined) return ci;
  }
  const own = indentOf(text, el.start);
  return own === undefined ? undefined : own + style.unit;
}

/** Renders `<name a='1' b='2'/>` (or with content) in the document's quote style. */
export function tag(
  style: Style,
  name: string,
  attrs: [string, string][],
  content?: string,
): string {
  const q = style.quote;
  const a = attrs.map(([k, v]) => ` ${k}=${q}${escapeXml(v, q)}${q}`).join('');
  return content === undefined ? `<${name}${a}/>` : `<${name}${a}>${content}</${name}>`;
}

/** Sets an attribute's value in place, or adds it after the last attribute (or first, when `first`). */
export function setAttr(
  text: string,
  el: XmlElement,
  name: string,
  value: string,
  style: Style,
  opts: { first?: boolean } = {},
): Splice | undefined {
  const a = el.attrs.find((x) => x.name === name);
  if (a) {
    if (a.value === value) return undefined;
    return { start: a.valueStart, end: a.valueEnd, text: escapeXml(value, a.quote) };
  }
  const q = style.quote;
  const at =
    opts.first || el.attrs.length === 0
      ? el.start + 1 + el.name.length
      : el.attrs[el.attrs.length - 1]!.end;
  return { start: at, end: at, text: ` ${name}=${q}${escapeXml(value, q)}${q}` };
}

/** Removes an attribute together with the whitespace before it. */
export function removeAttr(text: string, a: XmlAttr): Splice {
  let s = a.start;
  while (s > 0 && /\s/.test(text[s - 1]!)) s--;
  return { start: s, end: a.end, text: '' };
}

/** Removes an element; when it sits alone on its line(s), the whole line goes. */
export function removeElement(text: string, el: XmlElement): Splice {
  const ind = indentOf(text, el.start);
  if (ind !== undefined && restOfLineBlank(text, el.end)) {
    const ls = lineStart(text, el.start);
    const nl = text.indexOf('\n', el.end);
    return { start: ls, end: nl < 0 ? text.length : nl + 1, text: '' };
  }
  return { start: el.start, end: el.end, text: '' };
}

/** Inserts `markup` as the last child of `el`, on its own line when el's children are. */
export function appendChild(text: string, el: XmlElement, markup: string, style: Style): Splice {
  const ci = childIndent(text, el, style);
  if (el.selfClosing) {
    // `<cpu mode='x'/>` → `<cpu mode='x'>` + child + `</cpu>`; whitespace before `/>` goes.
    let s = el.end - 2;
    while (/\s/.test(text[s - 1]!)) s--;
    const own = indentOf(text, el.start);
    const body =
      own !== undefined && ci !== undefined
        ? `>${style.nl}${ci}${markup}${style.nl}${own}</${el.name}>`
        : `>${markup}</${el.name}>`;
    return { start: s, end: el.end, text: body };
  }
  const last = el.children[el.children.length - 1];
  if (last) {
    const li = indentOf(text, last.start);
    if (li !== undefined)
      return { start: last.end, end: last.end, text: `${style.nl}${li}${markup}` };
    return { start: last.end, end: last.end, text: markup };
  }
  // No element children: the end tag on its own line → a new line before it.
  const closeIndent = indentOf(text, el.closeStart);
  if (
    closeIndent !== undefined &&
    ci !== undefined &&
    lineStart(text, el.closeStart) > el.openEnd
  ) {
    const ls = lineStart(text, el.closeStart);
    return { start: ls, end: ls, text: `${ci}${markup}${style.nl}` };
  }
  const own = indentOf(text, el.start);
  if (own !== undefined && ci !== undefined && !/\S/.test(text.slice(el.openEnd, el.closeStart)))
    return {
      start: el.openEnd,
      end: el.closeStart,
      text: `${style.nl}${ci}${markup}${style.nl}${own}`,
    };
  return { start: el.closeStart, end: el.closeStart, text: markup };
}

/** Inserts `markup` as the first child of `el` (before its first element child). */
export function prependChild(text: string, el: XmlElement, markup: string, style: Style): Splice {
  const first = el.children[0];
  if (!first || el.selfClosing) return appendChild(text, el, markup, style);
  const fi = indentOf(text, first.start);
  if (fi !== undefined) {
    const ls = lineStart(text, first.start);
    return { start: ls, end: ls, text: `${fi}${markup}${style.nl}` };
  }
  return { start: first.start, end: first.start, text: markup };
}

/** Inserts `markup` as a sibling right after `el`, on its own line when el is. */
export function insertAfter(text: string, el: XmlElement, markup: string, style: Style): Splice {
  const ind = indentOf(text, el.start);
  if (ind !== undefined) return { start: el.end, end: el.end, text: `${style.nl}${ind}${markup}` };
  return { start: el.end, end: el.end, text: markup };
}

/** Re-indents multi-line markup built with `\n` + unit levels for the document. */
export function block(lines: string[], indent: string, style: Style): string {
  return lines.map((l, i) => (i === 0 ? l : indent + l)).join(style.nl);
}
