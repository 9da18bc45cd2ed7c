/**
 * A small XML scanner that keeps byte offsets. It is used only to *locate*
 * elements and attributes in a domain XML document; edits are splices into
 * the original text (see edit.ts), so comments, CDATA, attribute order,
 * quoting and whitespace survive untouched. It checks well-formedness
 * (matching tags, one root, quoted attributes) and reports the first
 * problem with its line and column.
 */

/** One attribute of a start tag, with the spans of its name and value. */
export interface XmlAttr {
  name: string;
  /** Value with entities decoded. */
  value: string;
  /** Span of the whole `name='value'`. */
  start: number;
  end: number;
  /** Span of the raw value, between the quotes. */
  valueStart: number;
  valueEnd: number;
  quote: '"' | "'";
}

/** An element with the spans of its tags; `children` are elements only. */
export interface XmlElement {
  name: string;
  attrs: XmlAttr[];
  /** Offset of `<` of the start tag. */
  start: number;
  /** Offset just after the start tag's `>`. */
  openEnd: number;
  /** Offset of `<` of the end tag (=== openEnd - 2 + ... for self-closing: openEnd). */
  closeStart: number;
  /** Offset just after the end tag (or the self-closing start tag). */
  end: number;
  selfClosing: boolean;
  children: XmlElement[];
  parent: XmlElement | undefined;
}

export interface XmlDocument {
  text: string;
  root: XmlElement;
}

/** A document that is not well-formed XML; `line`/`column` are 1-based. */
export class XmlSyntaxError extends Error {
  readonly line: number;
  readonly column: number;
  readonly reason: string;
  constructor(text: string, offset: number, reason: string) {
    const { line, column } = position(text, offset);
    super(`line ${line}, column ${column}: ${reason}`);
    this.line = line;
    this.column = column;
    this.reason = reason;
  }
}

function position(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let last = -1;
  for (let i = 0; i < offset && i < text.length; i++)
    if (text.charCodeAt(i) === 10) {
      line++;
      last = i;
    }
  return { line, column: offset - last };
}

const NAME_START = /[A-Za-z_:\u00C0-\uFFFF]/;
const NAME_CHAR = /[A-Za-z0-9_:.\-\u00B7\u00C0-\uFFFF]/;

/** Decodes the five predefined entities and numeric character references. */
export function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    switch (e) {
      case 'lt':
        return '<';
      case 'gt':
        return '>';
      case 'amp':
        return '&';
      case 'quot':
        return '"';
      case 'apos':
        return "'";
      default:
        return String.fromCodePoint(
          e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10),
        );
    }
  });
}

/** Escapes text for use inside an attribute quoted with `quote`, or element content. */
export function escapeXml(s: string, quote: '"' | "'" | null = null): string {
  let r = s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  if (quote === "'") r = r.replace(/'/g, '&apos;');
  if (quote === '"') r = r.replace(/"/g, '&quot;');
  return r;
}

/** Parses `text`; throws XmlSyntaxError when it is not well-formed. */
export function parseXml(text: string): XmlDocument {
  let i = 0;
  const n = text.length;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  const fail = (at: number, why: string): never => {
    throw new XmlSyntaxError(text, at, why);
  };
  const skipTo = (needle: string, from: number, what: string): number => {
    const j = text.indexOf(needle, from);
    if (j < 0) fail(from, `unterminated ${what}`);
    return j + needle.length;
  };
  while (i < n) {
    const lt = text.indexOf('<', i);
    const textEnd = lt < 0 ? n : lt;
    if (textEnd > i) {
      const chunk = text.slice(i, textEnd);
      if (stack.length === 0 && /\S/.test(chunk))
        fail(
          i + chunk.search(/\S/),
          root ? 'text after the root element' : 'text before the root element',
        );
      const amp = chunk.search(/&(?!(lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)/);
      if (amp >= 0) fail(i + amp, "a bare '&' (write &amp;)");
    }
    if (lt < 0) break;
    i = lt;
    if (text.startsWith('<!--', i)) {
      const end = skipTo('-->', i + 4, 'comment');
      if (text.slice(i + 4, end - 3).includes('--')) fail(i, "'--' inside a comment");
      i = end;
    } else if (text.startsWith('<![CDATA[', i)) {
      if (stack.length === 0) fail(i, 'CDATA outside the root element');
      i = skipTo(']]>', i + 9, 'CDATA section');
    } else if (text.startsWith('<?', i)) {
      i = skipTo('?>', i + 2, 'processing instruction');
    } else if (text.startsWith('<!DOCTYPE', i)) {
      if (root || stack.length) fail(i, 'DOCTYPE after the root element started');
      // Internal subsets ([...]) are allowed but not interpreted.
      let j = i + 9;
      let depth = 0;
      for (; j < n; j++) {
        const c = text[j];
        if (c === '[') depth++;
        else if (c === ']') depth--;
        else if (c === '>' && depth <= 0) break;
      }
      if (j >= n) fail(i, 'unterminated DOCTYPE');
      i = j + 1;
    } else if (text[i + 1] === '/') {
      let j = i + 2;
      while (j < n && NAME_CHAR.test(text[j]!)) j++;
      const name = text.slice(i + 2, j);
      while (j < n && /\s/.test(text[j]!)) j++;
      if (text[j] !== '>') fail(j, `malformed end tag </${name}`);
      const open = stack.pop();
      if (!open) fail(i, `end tag </${name}> without a start tag`);
      if (open!.name !== name) fail(i, `end tag </${name}> does not match <${open!.name}>`);
      open!.closeStart = i;
      open!.end = j + 1;
      i = j + 1;
    } else {
      // Start tag.
      let j = i + 1;
      if (!NAME_START.test(text[j] ?? '')) fail(i, "'<' not followed by a tag name (write &lt;)");
      while (j < n && NAME_CHAR.test(text[j]!)) j++;
      const name = text.slice(i + 1, j);
      const attrs: XmlAttr[] = [];
      let selfClosing = false;
      for (;;) {
        const ws = j;
        while (j < n && /\s/.test(text[j]!)) j++;
        if (j >= n) fail(i, `unterminated start tag <${name}`);
        if (text[j] === '>') {
          j++;
          break;
        }
        if (text.startsWith('/>', j)) {
          selfClosing = true;
          j += 2;
          break;
        }
        if (j === ws) fail(j, `expected whitespace before an attribute in <${name}>`);
        const as = j;
        if (!NAME_START.test(text[j]!))
          fail(j, `unexpected ${JSON.stringify(text[j])} in <${name}>`);
        while (j < n && NAME_CHAR.test(text[j]!)) j++;
        const an = text.slice(as, j);
        while (j < n && /\s/.test(text[j]!)) j++;
        if (text[j] !== '=') fail(j, `attribute ${an} in <${name}> has no value`);
        j++;
        while (j < n && /\s/.test(text[j]!)) j++;
        const q = text[j];
        if (q !== '"' && q !== "'") fail(j, `attribute ${an} in <${name}>: value must be quoted`);
        const ve = text.indexOf(q!, j + 1);
        if (ve < 0) fail(j, `attribute ${an} in <${name}>: unterminated value`);
        const raw = text.slice(j + 1, ve);
        if (raw.includes('<')) fail(j + 1 + raw.indexOf('<'), `'<' inside attribute ${an}`);
        if (attrs.some((a) => a.name === an)) fail(as, `duplicate attribute ${an} in <${name}>`);
        attrs.push({
          name: an,
          value: decodeEntities(raw),
          start: as,
          end: ve + 1,
          valueStart: j + 1,
          valueEnd: ve,
          quote: q as '"' | "'",
        });
        j = ve + 1;
      }
      const parent = stack[stack.length - 1];
      if (!parent && root) fail(i, 'a second root element');
      const el: XmlElement = {
        name,
        attrs,
        start: i,
        openEnd: j,
        closeStart: j,
        end: j,
        selfClosing,
        children: [],
        parent,
      };
      if (parent) parent.children.push(el);
      else root = el;
      if (!selfClosing) stack.push(el);
      i = j;
    }
  }
  if (stack.length) fail(n, `<${stack[stack.length - 1]!.name}> is not closed`);
  if (!root) fail(0, 'no root element');
  return { text, root: root! };
}

/** The value of an attribute, or undefined. */
export function attr(el: XmlElement, name: string): string | undefined {
  return el.attrs.find((a) => a.name === name)?.value;
}

/** Direct children named `name`. */
export function childrenNamed(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

/** The first direct child named `name`. */
export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

/** An element's text content: character data and CDATA, comments and child tags removed. */
export function textContent(doc: XmlDocument, el: XmlElement): string {
  if (el.selfClosing) return '';
  const inner = doc.text.slice(el.openEnd, el.closeStart);
  let out = '';
  let i = 0;
  while (i < inner.length) {
    if (inner.startsWith('<!--', i)) i = inner.indexOf('-->', i) + 3;
    else if (inner.startsWith('<![CDATA[', i)) {
      const e = inner.indexOf(']]>', i);
      out += inner.slice(i + 9, e);
      i = e + 3;
    } else if (inner[i] === '<') i = inner.indexOf('>', i) + 1;
    else {
      const next = inner.indexOf('<', i);
      const e = next < 0 ? inner.length : next;
      out += decodeEntities(inner.slice(i, e));
      i = e;
    }
  }
  return out;
}
