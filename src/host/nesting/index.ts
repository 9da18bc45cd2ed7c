/**
 * `nestvirt enable` / `disable` behind the CLI: read the facts, plan, and
 * (unless dry-run) apply the plan under the nesting lock, record what
 * changed in the ledger (owner `nesting`), and re-read the parameter.
 */
import { join } from 'node:path';
import type { Runner } from '../../util/exec.js';
import { shellQuote } from '../../util/exec.js';
import { NotPossibleError } from '../../errors.js';
import { applyPlan, type Plan } from '../plan.js';
import { Dirs } from '../../state/paths.js';
import { withLock } from '../../state/lock.js';
import { readEntry, recordChanges, removeEntry } from '../../state/ledger.js';
import {
  NESTING_MODULES,
  readNestingFacts,
  readRootFile,
  type NestingFacts,
  type NestingModule,
} from './facts.js';
import { findNestedOptions, NESTVIRT_CONF } from './modprobe-d.js';
import { describeUsers, findKvmUsers, stopHint, type KvmUser } from './users.js';
import {
  planDisable,
  planEnable,
  type NestingEffects,
  type NestingPlan,
  type NestingProblem,
} from './plan.js';

export { NESTVIRT_CONF };
export const LEDGER_OWNER = 'nesting';
export const MODULES = NESTING_MODULES;

export type NestingAction = 'enable' | 'disable';

/** `--json` output of enable/disable (documented in docs/enable.md). */
export interface NestingReport {
  action: NestingAction;
  module: NestingModule | null;
  /** nested before, as a boolean; null when unknown (module not loaded). */
  before: boolean | null;
  /** nested after (re-read after applying; as planned with --dry-run). */
  after: boolean | null;
  persist: boolean;
  dryRun: boolean;
  steps: { title: string; shell: string[] }[];
  notes: string[];
  /** True when the host was changed. */
  changed: boolean;
  /** disable: a record of `nestvirt enable` was found and undone. */
  record: boolean;
  /** Processes holding KVM open now (only looked for when the plan reloads the module). */
  users: KvmUser[];
  problem: NestingProblem | null;
}

export interface NestingOptions {
  root: string;
  stateRoot: string;
  persist: boolean;
  module?: NestingModule;
  run: Runner;
  env: NodeJS.ProcessEnv;
  /** Planning for a captured tree (--root): plan only, without this machine's ledger. */
  capturedTree?: boolean;
}

export interface Prepared {
  facts: NestingFacts;
  planned: NestingPlan;
  record: boolean;
  report: NestingReport;
}

/** The effects of a real (or test) host: modprobe through the Runner, files through root. */
export function hostEffects(opts: NestingOptions): NestingEffects {
  return {
    root: opts.root,
    stateRoot: opts.stateRoot,
    async modprobe(args) {
      const argv = ['modprobe', ...args];
      const r = await opts.run(argv, { env: opts.env, check: false, timeoutMs: 60_000 });
      if (r.code !== 0) {
        const why =
          (r.stderr.trim() || r.stdout.trim()).split('\n').pop() || `exit ${r.code ?? r.signal}`;
        throw new NotPossibleError(
          'nesting.modprobe-failed',
          `\`${shellQuote(argv)}\` failed: ${why}`,
          'check that the module is installed (`modinfo ' +
            (args.find((a) => !a.startsWith('-')) ?? '') +
            '`) and `dmesg`; nestvirt undid the steps before',
        );
      }
    },
  };
}

/** Reads the facts and plans the action; nothing is changed. */
export async function prepare(action: NestingAction, opts: NestingOptions): Promise<Prepared> {
  const facts = await readNestingFacts(opts.root, {
    run: opts.run,
    env: opts.env,
    ...(opts.module ? { module: opts.module } : {}),
  });
  const fx = hostEffects(opts);
  // A captured tree (--root) is another machine: this machine's record does not apply to it.
  const entry =
    action === 'disable' && !opts.capturedTree
      ? await readEntry(opts.stateRoot, LEDGER_OWNER)
      : undefined;
  const module =
    (entry?.changes.find((c) => c.kind === 'nesting.param')?.module as NestingModule | undefined) ??
    facts.module;
  const conf = {
    current: await readRootFile(opts.root, NESTVIRT_CONF.slice(1)),
    others: module ? await findNestedOptions(opts.root, module) : [],
  };
  const planned =
    action === 'enable'
      ? planEnable(facts, conf, { persist: opts.persist }, fx)
      : planDisable(facts, conf, entry?.changes, { persist: opts.persist }, fx);
  // Who uses the module now, so --dry-run can say the plan would stop.
  let users: KvmUser[] = [];
  const check = planned.plan.steps.find((s) => s.title.startsWith('check that no VM uses'));
  if (check && planned.module) {
    users = await findKvmUsers(opts.root, opts.stateRoot);
    if (users.length || facts.refcnt > 0)
      planned.plan.notes.unshift(
        `${describeUsers(planned.module, users, facts.refcnt, facts.holders)}: the plan stops at "${check.title}" until they are stopped (${stopHint(users).replace(/^stop them first \((.*)\) and retry$/, '$1')})`,
      );
  }
  return {
    facts,
    planned,
    record: entry !== undefined,
    report: {
      action,
      module: planned.module,
      before: planned.before,
      after: planned.after,
      persist: opts.persist,
      dryRun: true,
      steps: planned.plan.steps.map((s) => ({ title: s.title, shell: s.shell })),
      notes: planned.plan.notes,
      changed: false,
      record: entry !== undefined,
      users,
      problem: planned.problem,
    },
  };
}

/**
 * Applies a prepared plan under the nesting lock; on success records the
 * changes (enable) or clears the record (disable). A failing step reverts
 * the ones before it and the error propagates.
 */
export async function apply(
  p: Prepared,
  opts: NestingOptions,
  wrap: (plan: Plan) => Plan = (x) => x,
): Promise<NestingReport> {
  const lockPath = join(opts.stateRoot, Dirs.locks, 'nesting.lock');
  return withLock(lockPath, 'KVM nesting', async () => {
    const changes = await applyPlan(wrap(p.planned.plan));
    if (p.report.action === 'enable') {
      if (changes.length) await recordChanges(opts.stateRoot, LEDGER_OWNER, changes);
    } else if (p.record) await removeEntry(opts.stateRoot, LEDGER_OWNER);
    const m = p.planned.module;
    const after = m
      ? await readNestingFacts(opts.root, { module: m, run: opts.run, env: opts.env })
      : p.facts;
    return {
      ...p.report,
      dryRun: false,
      changed: p.planned.plan.steps.length > 0,
      after: after.nested,
    };
  });
}
