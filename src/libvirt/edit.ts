/**
 * The surgical domain-XML edit behind `nestvirt libvirt nest`: it locates the
 * `<cpu>` and `<features>` elements in the original text and splices in only
 * what nesting needs, so comments, attribute order, quoting, whitespace and
 * everything else stay exactly as they were. Pure: text in, text out.
 *
 * Why `require` and never `optional`: with `optional` libvirt silently drops
 * the feature on a host without it, and the guest boots unable to nest.
 * Why update instead of add: libvirt rejects a domain listing the same
 * feature twice (e.g. `vmx` optional and `vmx` require).
 */
import { NestvirtError, UsageError } from '../errors.js';
import {
  attr,
  child,
  childrenNamed,
  parseXml,
  textContent,
  XmlSyntaxError,
  type XmlDocument,
  type XmlElement,
} from './xml.js';
import {
  appendChild,
  applySplices,
  block,
  detectStyle,
  indentOf,
  insertAfter,
  prependChild,
  removeAttr,
  removeElement,
  setAttr,
  tag,
  type Splice,
} from './splice.js';
import type { CpuMode, Extension } from './types.js';

export interface NestEditOptions {
  /** What the guest needs: vmx (Intel), svm (AMD and TCG), nested-hv (POWER). */
  extension: Exclude<Extension, 'sie'>;
  /** CPU mode to set; default: keep the domain's, or pick one when it has no `<cpu>`. */
  mode?: CpuMode;
  /** CPU model for `custom` mode. */
  model?: string;
  /** Mode used when the domain has no `<cpu>` and `mode` is not given. */
  defaultMode?: CpuMode;
}

export interface NestEditResult {
  text: string;
  changed: boolean;
  /** One line per change, for humans. */
  notes: string[];
}

/** Parses a domain XML document; bad XML or a non-domain root is a UsageError (exit 2). */
export function parseDomainXml(text: string, what = 'the domain XML'): XmlDocument {
  let doc: XmlDocument;
  try {
    doc = parseXml(text);
  } catch (e) {
    if (e instanceof XmlSyntaxError)
      throw new UsageError(
        'libvirt.invalid-xml',
        `${what} is not valid XML: ${e.message}`,
        'fix the XML (e.g. check it with `xmllint --noout FILE`) and try again',
      );
    throw e;
  }
  if (doc.root.name !== 'domain')
    throw new UsageError(
      'libvirt.not-a-domain',
      `${what} is not a libvirt domain: its root element is <${doc.root.name}>, expected <domain>`,
      'pass a domain XML (as from `virsh dumpxml DOMAIN`)',
    );
  return doc;
}

const CPU_ANCHORS = ['features', 'os', 'vcpu', 'currentMemory', 'memory'];
const FEATURES_ANCHORS = ['os', 'vcpu', 'currentMemory', 'memory'];

/** Returns the domain XML with nesting switched on, and what was changed. */
export function nestXml(text: string, opts: NestEditOptions): NestEditResult {
  const doc = parseDomainXml(text);
  const style = detectStyle(doc);
  const splices: Splice[] = [];
  const notes: string[] = [];
  if (opts.extension === 'nested-hv') {
    editFeatures(doc, style, splices, notes);
    if (opts.mode || opts.model)
      editCpu(doc, style, splices, notes, { ...opts, feature: undefined });
  } else {
    editCpu(doc, style, splices, notes, { ...opts, feature: opts.extension });
  }
  const out = applySplices(text, splices);
  return { text: out, changed: out !== text, notes };
}

function editFeatures(
  doc: XmlDocument,
  style: ReturnType<typeof detectStyle>,
  splices: Splice[],
  notes: string[],
): void {
  const { text, root } = doc;
  const features = child(root, 'features');
  const nhv = tag(style, 'nested-hv', [['state', 'on']]);
  if (!features) {
    const anchor = findAnchor(root, FEATURES_ANCHORS);
    const ind = anchor ? indentOf(text, anchor.start) : undefined;
    const markup =
      ind !== undefined
        ? block(['<features>', style.unit + nhv, '</features>'], ind, style)
        : `<features>${nhv}</features>`;
    splices.push(
      anchor ? insertAfter(text, anchor, markup, style) : appendChild(text, root, markup, style),
    );
    notes.push("added <features> with <nested-hv state='on'/>");
    return;
  }
  const [first, ...dups] = childrenNamed(features, 'nested-hv');
  if (!first) {
    splices.push(appendChild(text, features, nhv, style));
    notes.push("added <nested-hv state='on'/> to <features>");
    return;
  }
  const s = setAttr(text, first, 'state', 'on', style);
  if (s) {
    splices.push(s);
    notes.push(
      `set <nested-hv> state='on' (was ${attr(first, 'state') === undefined ? 'unset' : `'${attr(first, 'state')}'`})`,
    );
  }
  for (const d of dups) {
    splices.push(removeElement(text, d));
    notes.push('removed a duplicate <nested-hv> (libvirt rejects duplicates)');
  }
}

function editCpu(
  doc: XmlDocument,
  style: ReturnType<typeof detectStyle>,
  splices: Splice[],
  notes: string[],
  opts: NestEditOptions & { feature: 'vmx' | 'svm' | undefined },
): void {
  const { text, root } = doc;
  const cpu = child(root, 'cpu');
  const wantMode: CpuMode | undefined = opts.mode ?? (opts.model ? 'custom' : undefined);
  const feature = opts.feature
    ? tag(style, 'feature', [
        ['policy', 'require'],
        ['name', opts.feature],
      ])
    : undefined;
  if (!cpu) {
    const mode = wantMode ?? opts.defaultMode ?? 'host-passthrough';
    if (mode === 'custom' && !opts.model) throw missingModel();
    const attrs: [string, string][] =
      mode === 'custom'
        ? [
            ['mode', 'custom'],
            ['match', 'exact'],
            ['check', 'partial'],
          ]
        : [
            ['mode', mode],
            ['check', mode === 'host-model' ? 'partial' : 'none'],
          ];
    const kids: string[] = [];
    if (mode === 'custom')
      kids.push(tag(style, 'model', [['fallback', 'allow']], escapeText(opts.model!)));
    if (feature) kids.push(feature);
    const anchor = findAnchor(root, CPU_ANCHORS);
    const ind = anchor ? indentOf(text, anchor.start) : undefined;
    let markup: string;
    if (kids.length === 0) markup = tag(style, 'cpu', attrs);
    else {
      const open = tag(style, 'cpu', attrs, '').replace(/<\/cpu>$/, '');
      markup =
        ind !== undefined
          ? block([open, ...kids.map((k) => style.unit + k), '</cpu>'], ind, style)
          : `${open}${kids.join('')}</cpu>`;
    }
    splices.push(
      anchor ? insertAfter(text, anchor, markup, style) : appendChild(text, root, markup, style),
    );
    notes.push(`added <cpu mode='${mode}'>${opts.feature ? ` requiring ${opts.feature}` : ''}`);
    return;
  }
  const curMode = (attr(cpu, 'mode') ?? 'custom') as string;
  // Every splice inside <cpu> must not overlap; removals and insertions touch different spans.
  if (wantMode && wantMode !== curMode) {
    const s = setAttr(text, cpu, 'mode', wantMode, style, { first: true });
    if (s) splices.push(s);
    notes.push(`changed the CPU mode from ${curMode} to ${wantMode}`);
  }
  const mode = wantMode ?? curMode;
  const model = child(cpu, 'model');
  const matchAttr = cpu.attrs.find((a) => a.name === 'match');
  if (mode === 'custom') {
    if (!model) {
      if (!opts.model) throw missingModel();
      splices.push(
        prependChild(
          text,
          cpu,
          tag(style, 'model', [['fallback', 'allow']], escapeText(opts.model)),
          style,
        ),
      );
      notes.push(`added <model>${opts.model}</model>`);
    } else if (opts.model && textOf(doc, model).trim() !== opts.model) {
      if (model.selfClosing)
        splices.push({
          start: model.end - 2,
          end: model.end,
          text: `>${escapeText(opts.model)}</model>`,
        });
      else
        splices.push({ start: model.openEnd, end: model.closeStart, text: escapeText(opts.model) });
      notes.push(
        `changed the CPU model from ${textOf(doc, model).trim() || '(none)'} to ${opts.model}`,
      );
    }
  } else if (wantMode && wantMode !== curMode) {
    // libvirt ignores match= and <model> outside custom mode (and drops them
    // when it saves the domain); remove them so the XML says what runs.
    if (matchAttr) splices.push(removeAttr(text, matchAttr));
    if (model && mode !== 'host-model') {
      splices.push(removeElement(text, model));
      notes.push(`removed <model> (not used in ${mode} mode)`);
    }
  }
  if (!opts.feature) return;
  const same = childrenNamed(cpu, 'feature').filter((f) => attr(f, 'name') === opts.feature);
  const [first, ...dups] = same;
  if (!first) {
    splices.push(appendChild(text, cpu, feature!, style));
    notes.push(`added <feature policy='require' name='${opts.feature}'/>`);
  } else {
    const policy = attr(first, 'policy');
    if (policy !== undefined && policy !== 'require') {
      const s = setAttr(text, first, 'policy', 'require', style);
      if (s) splices.push(s);
      notes.push(`changed ${opts.feature} from policy='${policy}' to policy='require'`);
    }
    for (const d of dups) {
      splices.push(removeElement(text, d));
      notes.push(`removed a duplicate ${opts.feature} feature (libvirt rejects duplicates)`);
    }
  }
}

function findAnchor(root: XmlElement, names: string[]): XmlElement | undefined {
  for (const n of names) {
    const el = child(root, n);
    if (el) return el;
  }
  return undefined;
}

function textOf(doc: XmlDocument, el: XmlElement): string {
  return textContent(doc, el);
}

function escapeText(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function missingModel(): NestvirtError {
  return new UsageError(
    'libvirt.missing-model',
    'custom CPU mode needs a CPU model and the domain has none',
    'add --model NAME (e.g. --model EPYC or --model Skylake-Client; see `virsh cpu-models x86_64`)',
  );
}
