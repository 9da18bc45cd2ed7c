/**
 * Planning nesting on/off, purely: from the facts (facts.ts), the modprobe.d
 * state (modprobe-d.ts) and, for `disable`, the ledger record, compute a
 * Plan whose steps carry their exact shell lines. Nothing here touches the
 * host; the steps' apply/revert go through `NestingEffects`.
 */
import { join } from 'node:path';
import { readdir, rm } from 'node:fs/promises';
import type { Plan, Step } from '../plan.js';
import type { Change } from '../../state/ledger.js';
import { writeAtomic } from '../../state/store.js';
import { shellQuote } from '../../util/exec.js';
import { NotPossibleError } from '../../errors.js';
import {
  parseNested,
  parseProcModules,
  readRootFile,
  type NestingFacts,
  type NestingModule,
} from './facts.js';
import { confContent, NESTVIRT_CONF, type ConfOption } from './modprobe-d.js';
import { describeUsers, findKvmUsers, stopHint } from './users.js';

/** The host operations a plan's steps perform. */
export interface NestingEffects {
  /** Root the files are read and written through ('/' on a real host). */
  root: string;
  /** nestvirt's state root, to name nestvirt VMs that use KVM. */
  stateRoot: string;
  /** Runs `modprobe ARGS...`; throws NotPossibleError with modprobe's message. */
  modprobe(args: string[]): Promise<void>;
}

/** Ledger change: the module's `nested` value before nestvirt reloaded it. */
export interface ParamChange extends Change {
  kind: 'nesting.param';
  module: NestingModule;
  /** Raw value before (Y/N/1/0); null when the module was not loaded. */
  before: string | null;
  after: string;
}

/** Ledger change: nestvirt wrote its modprobe.d file. */
export interface FileChange extends Change {
  kind: 'nesting.file';
  /** Absolute host path. */
  path: string;
  /** Content before; null when the file did not exist. */
  previous: string | null;
  /** What nestvirt wrote. */
  content: string;
}

/** Why nothing can be done here, with the fix at the right layer. */
export interface NestingProblem {
  id: string;
  message: string;
  fix: string;
}

export interface NestingPlan {
  plan: Plan;
  module: NestingModule | null;
  /** nested before, as a boolean (null if unknown or not loaded). */
  before: boolean | null;
  /** nested after the plan is applied, as planned. */
  after: boolean | null;
  /** Set when the request cannot be done on this machine (exit 1). */
  problem: NestingProblem | null;
}

/** The modprobe.d side of the state the planner needs. */
export interface ConfState {
  /** Current content of nestvirt's own file, undefined when absent. */
  current: string | undefined;
  /** Other files' `nested` options for the module. */
  others: ConfOption[];
}

const paramPath = (m: string): string => `/sys/module/${m}/parameters/nested`;

/**
 * Why enable/disable cannot work here: no module with `nested` (aarch64), or
 * doctor's blocking problem (no VT-x/AMD-V/SIE, a PVM guest, disabled by the
 * firmware), with doctor's fix at the right layer. Null when a plan is possible.
 */
export function noModuleProblem(
  f: NestingFacts,
  verb: 'enable' | 'disable',
): NestingProblem | null {
  if (f.arch === 'aarch64' && !f.moduleForced)
    return {
      id: 'nesting.arm64',
      message: `nothing to ${verb} here: on aarch64, KVM nesting is not a module parameter but the kernel mode kvm-arm.mode=nested (CPUs with FEAT_NV2)`,
      fix: 'add kvm-arm.mode=nested to the kernel command line and reboot (a kernel with arm64 nested virtualization support)',
    };
  if (f.module && f.moduleForced) return null;
  if (f.blocker && !(f.module && f.moduleState === 'loaded'))
    return {
      id: 'nesting.no-kvm',
      message: `nothing to ${verb} here: ${f.blocker.message}`,
      fix: f.blocker.fix.replace('(see fallback)', '(`nestvirt doctor` shows how)'),
    };
  if (!f.module)
    return {
      id: 'nesting.no-kvm',
      message: `nothing to ${verb} here: no KVM module with a nested parameter fits this ${f.vendor} ${f.arch} CPU`,
      fix: 'run `nestvirt doctor` for what this machine can do',
    };
  return null;
}

function builtinProblem(m: string, want: 0 | 1): NestingProblem {
  return {
    id: 'nesting.builtin',
    message: `${m} is built into this kernel: it cannot be reloaded, and modprobe.d options do not apply to it`,
    fix: `add ${m}.nested=${want} to the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot`,
  };
}

function checkUnusedStep(m: NestingModule, fx: NestingEffects): Step {
  const msg = `nestvirt: ${m} is in use by running VMs; stop them first and retry`;
  return {
    title: `check that no VM uses ${m}`,
    shell: [
      `if [ "$(cat /sys/module/${m}/refcnt 2>/dev/null || echo 0)" != 0 ]; then echo ${shellQuote([msg])} >&2; exit 1; fi`,
    ],
    async apply() {
      const rc =
        Number((await readRootFile(fx.root, `sys/module/${m}/refcnt`))?.trim() ?? '0') || 0;
      const users = await findKvmUsers(fx.root, fx.stateRoot);
      if (rc > 0 || users.length > 0) {
        let holders: string[] = [];
        try {
          holders = (await readdir(join(fx.root, `sys/module/${m}/holders`))).sort();
        } catch {
          /* none */
        }
        throw new NotPossibleError(
          'nesting.in-use',
          `${describeUsers(m, users, rc, holders)}; ${stopHint(users)}`,
        );
      }
    },
  };
}

function unloadStep(
  m: NestingModule,
  beforeRaw: string | null,
  fx: NestingEffects,
  ifLoaded = false,
): Step {
  let unloaded = false;
  return {
    title: ifLoaded ? `unload ${m} if it is loaded` : `unload ${m}`,
    shell: ifLoaded
      ? [`if grep -q '^${m} ' /proc/modules; then modprobe -r ${m}; fi`]
      : [`modprobe -r ${m}`],
    async apply() {
      if (ifLoaded) {
        const mods = (await readRootFile(fx.root, 'proc/modules')) ?? '';
        if (!parseProcModules(mods).has(m)) return;
      }
      await fx.modprobe(['-r', m]);
      unloaded = true;
    },
    async revert() {
      if (!unloaded) return;
      const prev = parseNested(beforeRaw);
      await fx.modprobe(prev === null ? [m] : [m, `nested=${prev ? 1 : 0}`]);
    },
  };
}

function loadStep(
  m: NestingModule,
  want: 0 | 1,
  beforeRaw: string | null,
  wasLoaded: boolean,
  fx: NestingEffects,
): Step {
  return {
    title: `load ${m} with nested=${want}`,
    shell: [`modprobe ${m} nested=${want}`],
    async apply() {
      await fx.modprobe([m, `nested=${want}`]);
      const c: ParamChange = {
        kind: 'nesting.param',
        module: m,
        before: wasLoaded ? beforeRaw : null,
        after: String(want),
      };
      return [c];
    },
    async revert() {
      await fx.modprobe(['-r', m]);
    },
  };
}

function verifyStep(m: NestingModule, want: 0 | 1, fx: NestingEffects): Step {
  const ok = want ? 'Y|1' : 'N|0';
  const msg = `nestvirt: ${m} nested did not read ${want ? 'Y/1' : 'N/0'} after the reload`;
  return {
    title: `check that ${m} nested reads ${want ? 'Y or 1' : 'N or 0'}`,
    shell: [
      `case "$(cat ${paramPath(m)})" in ${ok}) ;; *) echo ${shellQuote([msg])} >&2; exit 1 ;; esac`,
    ],
    async apply() {
      const raw = (await readRootFile(fx.root, paramPath(m).slice(1)))?.trim() ?? null;
      if (parseNested(raw) !== (want === 1))
        throw new NotPossibleError(
          'nesting.verify-failed',
          `after reloading ${m} with nested=${want}, ${paramPath(m)} reads ${raw === null ? 'nothing (no such parameter)' : JSON.stringify(raw)}; the change was undone`,
          want
            ? `the kernel refused nesting: check \`dmesg | grep -i ${m.replace('kvm_', '')}\` (${m === 'kvm_amd' ? 'kvm_amd needs NPT' : m === 'kvm_intel' ? 'kvm_intel needs EPT and unrestricted guest' : 'see the kernel log'}) and \`nestvirt doctor\``
            : `check \`dmesg\` and \`nestvirt doctor\``,
        );
    },
  };
}

function writeFileStep(
  path: string,
  content: string,
  previous: string | undefined,
  title: string,
  fx: NestingEffects,
): Step {
  return {
    title,
    shell: [`mkdir -p ${path.slice(0, path.lastIndexOf('/'))}`, writeLine(path, content)],
    async apply() {
      await writeAtomic(join(fx.root, path), content);
      const c: FileChange = { kind: 'nesting.file', path, previous: previous ?? null, content };
      return [c];
    },
    async revert() {
      if (previous === undefined) await rm(join(fx.root, path), { force: true });
      else await writeAtomic(join(fx.root, path), previous);
    },
  };
}

/** One shell line writing `content` to `path` exactly. */
export function writeLine(path: string, content: string): string {
  if (content.endsWith('\n')) {
    const lines = content.slice(0, -1).split('\n');
    return `printf '%s\\n' ${shellQuote(lines)} > ${path}`;
  }
  return `printf '%s' ${shellQuote([content])} > ${path}`;
}

function removeFileStep(path: string, current: string, fx: NestingEffects): Step {
  return {
    title: `remove ${path} (nestvirt's own file)`,
    shell: [`rm -f ${path}`],
    async apply() {
      await rm(join(fx.root, path), { force: true });
    },
    async revert() {
      await writeAtomic(join(fx.root, path), current);
    },
  };
}

/** Notes about other modprobe.d files and the kernel command line. */
function conflictNotes(f: NestingFacts, conf: ConfState, want: 0 | 1, persist: boolean): string[] {
  const m = f.module!;
  const notes: string[] = [];
  for (const o of conf.others) {
    if (parseNested(o.value) === (want === 1)) continue;
    const later = o.file.slice(o.file.lastIndexOf('/') + 1) > 'nestvirt-nested.conf';
    notes.push(
      `${o.file}:${o.line} has \`${o.text}\` (the user's, left alone); ` +
        (persist && later
          ? `it is read after nestvirt's file and wins at the next load: edit or remove it for the change to last`
          : persist
            ? `nestvirt's file is read after it and wins`
            : `it applies at the next load or boot${want ? ' (use --persist, or edit it)' : ''}`),
    );
  }
  if (f.cmdlineNested !== null && parseNested(f.cmdlineNested) !== (want === 1))
    notes.push(
      `the kernel command line has ${m}.nested=${f.cmdlineNested}; modprobe applies it at every load, but the explicit nested=${want} here comes after it and wins${persist ? '; remove it from the boot loader for the change to last' : ''}`,
    );
  return notes;
}

/** Plans `nestvirt enable`. */
export function planEnable(
  f: NestingFacts,
  conf: ConfState,
  opts: { persist: boolean },
  fx: NestingEffects,
): NestingPlan {
  const title = `enable KVM nesting${f.module ? ` for ${f.module}` : ''}${opts.persist ? ' (now and at every boot)' : ' (until reboot)'}`;
  const plan: Plan = { title, steps: [], notes: [] };
  const base = { plan, module: f.module, before: f.nested, after: f.nested };
  const problem = noModuleProblem(f, 'enable');
  if (problem || !f.module) {
    plan.notes.push(problem!.message, `fix: ${problem!.fix}`);
    return { ...base, problem };
  }
  const m = f.module;
  if (f.moduleState === 'builtin') {
    if (f.nested) {
      if (opts.persist)
        plan.notes.push(
          `${m} is built into this kernel: modprobe.d does not apply; nested is on because of the kernel command line or the kernel's default`,
        );
      return { ...base, after: true, problem: null };
    }
    const p = builtinProblem(m, 1);
    plan.notes.push(p.message, `fix: ${p.fix}`);
    return { ...base, problem: p };
  }
  if (opts.persist) {
    const content = confContent(m, 1);
    if (conf.current !== content)
      plan.steps.push(
        writeFileStep(
          NESTVIRT_CONF,
          content,
          conf.current,
          `write ${NESTVIRT_CONF} (options ${m} nested=1)`,
          fx,
        ),
      );
  }
  if (f.moduleForced && !f.extension)
    plan.notes.push(
      `planned for ${m} as asked (--module); this tree's CPU shows no ${f.vendor === 'intel' ? 'vmx' : f.arch === 'x86_64' ? 'svm' : 'virtualization extension'}`,
    );
  if (f.nested !== true) {
    const loaded = f.moduleState === 'loaded';
    if (loaded) plan.steps.push(checkUnusedStep(m, fx), unloadStep(m, f.nestedRaw, fx));
    else if (f.moduleState === 'unknown')
      plan.steps.push(checkUnusedStep(m, fx), unloadStep(m, f.nestedRaw, fx, true));
    plan.steps.push(loadStep(m, 1, f.nestedRaw, loaded, fx), verifyStep(m, 1, fx));
  }
  plan.notes.push(...conflictNotes(f, conf, 1, opts.persist));
  if (!opts.persist && f.nested !== true)
    plan.notes.push(
      'this lasts until the module is reloaded or the machine reboots; add --persist to keep it',
    );
  return { ...base, after: true, problem: null };
}

/** Plans `nestvirt disable`: undoes the ledger record when there is one, else turns nested off. */
export function planDisable(
  f: NestingFacts,
  conf: ConfState,
  record: Change[] | undefined,
  opts: { persist: boolean },
  fx: NestingEffects,
): NestingPlan {
  const title = `disable KVM nesting${f.module ? ` for ${f.module}` : ''}${record ? ' (undo what nestvirt enable changed)' : ''}`;
  const plan: Plan = { title, steps: [], notes: [] };
  const base = { plan, module: f.module, before: f.nested, after: f.nested };
  const params = (record ?? []).filter((c): c is ParamChange => c.kind === 'nesting.param');
  const files = (record ?? []).filter((c): c is FileChange => c.kind === 'nesting.file');
  // With a record, the module is the one enable reloaded.
  const m = (params[0]?.module ?? f.module) as NestingModule | null;
  if (!record)
    plan.notes.push('no record of `nestvirt enable` found: turning nesting off if it is on');
  if (!m || (!record && noModuleProblem(f, 'disable'))) {
    // No KVM to nest here: nesting cannot be on, which is what disable wants.
    const problem = noModuleProblem(f, 'disable')!;
    plan.notes.push(problem.message);
    return { ...base, after: false, problem: null };
  }
  // Runtime: back to the recorded value, or off.
  let target: 0 | 1 | null = null;
  if (params.length) target = parseNested(params[0]!.before) ? 1 : 0;
  else if (!record) target = 0;
  let after = f.nested;
  // Files first in the record order reversed: restore the oldest previous content.
  if (files.length) {
    const first = files[0]!;
    const last = files[files.length - 1]!;
    if (conf.current === last.content) {
      if (first.previous === null) plan.steps.push(removeFileStep(first.path, conf.current, fx));
      else
        plan.steps.push(
          writeFileStep(
            first.path,
            first.previous,
            conf.current,
            `restore ${first.path} as it was before nestvirt`,
            fx,
          ),
        );
    } else if (conf.current === undefined) {
      plan.notes.push(`${first.path} is already gone`);
    } else {
      plan.notes.push(
        `${first.path} was changed since nestvirt wrote it; left alone (remove it by hand if you want)`,
      );
    }
  } else if (opts.persist) {
    const content = confContent(m, 0);
    if (conf.current !== content)
      plan.steps.push(
        writeFileStep(
          NESTVIRT_CONF,
          content,
          conf.current,
          `write ${NESTVIRT_CONF} (options ${m} nested=0)`,
          fx,
        ),
      );
  }
  if (target !== null && f.nested !== null && f.nested !== (target === 1)) {
    if (f.moduleState === 'builtin') {
      const p = builtinProblem(m, target);
      plan.notes.push(p.message, `fix: ${p.fix}`);
      return { ...base, problem: p };
    }
    plan.steps.push(
      checkUnusedStep(m, fx),
      unloadStep(m, f.nestedRaw, fx),
      loadStep(m, target, f.nestedRaw, true, fx),
      verifyStep(m, target, fx),
    );
    after = target === 1;
  } else if (target !== null && f.nested === null && f.moduleState === 'not-loaded') {
    plan.notes.push(`${m} is not loaded: nothing to reload`);
  }
  // The user's options that would turn nesting back on at the next load.
  if (target === 0)
    plan.notes.push(
      ...conflictNotes({ ...f, module: m }, conf, 0, opts.persist || files.length > 0),
    );
  return { ...base, module: m, after, problem: null };
}
