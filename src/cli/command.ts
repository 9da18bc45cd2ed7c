/**
 * The shape of a CLI command. Commands are thin: they parse flags with
 * `parseFlags`, call into src/<domain>, and print through `Output`.
 */
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.js';
import type { Output } from './output.js';
import type { Runner } from '../util/exec.js';

export interface FlagSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Shown in --help, e.g. `--root DIR  analyse a captured tree`. */
  help: string;
  /** Placeholder for string flags in --help (default VALUE). */
  arg?: string;
  default?: string | boolean;
}

export interface Context {
  out: Output;
  run: Runner;
  env: NodeJS.ProcessEnv;
  /** Effective uid (process.getuid), injectable for tests. */
  uid: number;
}

export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Usage line(s) after `nestvirt `, e.g. `doctor [--json] [--root DIR]`. */
  usage: string;
  /** Longer help text, examples included. */
  description?: string;
  flags?: Record<string, FlagSpec>;
  /** Subcommands (e.g. `image ls`); when present `run` is optional. */
  sub?: Command[];
  /** Allows arguments after `--` (exec VM -- CMD). */
  passthrough?: boolean;
  /** Number of positionals allowed: [min, max] (max Infinity allowed). */
  positionals?: [number, number];
  run?(args: ParsedArgs, ctx: Context): Promise<number>;
}

export interface ParsedArgs {
  flags: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** Everything after `--` when the command allows passthrough. */
  rest: string[];
}

/** Parses argv for a command; every problem becomes a one-line UsageError. */
export function parseFlags(cmd: Command, argv: string[], path: string): ParsedArgs {
  let rest: string[] = [];
  let own = argv;
  const dd = argv.indexOf('--');
  if (dd >= 0) {
    if (!cmd.passthrough)
      throw new UsageError(
        'usage.unexpected-args',
        `\`nestvirt ${path}\` takes no arguments after --`,
        `see \`nestvirt ${path} --help\``,
      );
    own = argv.slice(0, dd);
    rest = argv.slice(dd + 1);
  }
  const options: Record<
    string,
    { type: 'string' | 'boolean'; short?: string; multiple?: boolean }
  > = {};
  for (const [k, f] of Object.entries(cmd.flags ?? {})) {
    options[k] = {
      type: f.type,
      ...(f.short ? { short: f.short } : {}),
      ...(f.multiple ? { multiple: true } : {}),
    };
  }
  options['help'] = { type: 'boolean', short: 'h' };
  let parsed;
  try {
    parsed = parseArgs({ args: own, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(
      'usage.bad-flag',
      `${path}: ${flagMessage(e)}`,
      `see \`nestvirt ${path} --help\``,
    );
  }
  const flags: ParsedArgs['flags'] = { ...parsed.values } as ParsedArgs['flags'];
  for (const [k, f] of Object.entries(cmd.flags ?? {}))
    if (flags[k] === undefined && f.default !== undefined) flags[k] = f.default;
  const positionals = parsed.positionals;
  if (!flags['help'] && cmd.positionals) {
    const [min, max] = cmd.positionals;
    if (positionals.length < min)
      throw new UsageError(
        'usage.missing-arg',
        `${path}: missing argument; usage: nestvirt ${cmd.usage}`,
        `see \`nestvirt ${path} --help\``,
      );
    if (positionals.length > max)
      throw new UsageError(
        'usage.extra-arg',
        `${path}: unexpected argument ${JSON.stringify(positionals[max])}; usage: nestvirt ${cmd.usage}`,
        `see \`nestvirt ${path} --help\``,
      );
  }
  return { flags, positionals, rest };
}

function flagMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  // Node's messages are long and mention `strict:false`; keep the first sentence.
  const unknown = /Unknown option '([^']+)'/.exec(m);
  if (unknown) return `unknown flag ${unknown[1]}`;
  const missing = /Option '([^']+)' argument missing/.exec(m);
  if (missing) return `flag ${missing[1]!.replace(/ <value>$/, '')} needs a value`;
  const noval = /Option '([^']+)' does not take an argument/.exec(m);
  if (noval) return `flag ${noval[1]} takes no value`;
  return m.split('. ')[0] ?? m;
}

/** Reads a string flag, or undefined. */
export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags[name];
  if (Array.isArray(v)) return v[v.length - 1];
  return typeof v === 'string' ? v : undefined;
}
/** Reads a repeatable string flag as a list. */
export function list(args: ParsedArgs, name: string): string[] {
  const v = args.flags[name];
  if (Array.isArray(v)) return v;
  return typeof v === 'string' ? [v] : [];
}
/** Reads a boolean flag. */
export function bool(args: ParsedArgs, name: string): boolean {
  return args.flags[name] === true;
}

/** Renders --help for a command. */
export function helpText(cmd: Command, path: string): string {
  const lines = [`usage: nestvirt ${cmd.usage}`, '', cmd.summary];
  if (cmd.description) lines.push('', cmd.description.trimEnd());
  if (cmd.sub?.length) {
    lines.push('', 'commands:');
    const w = Math.max(...cmd.sub.map((s) => s.name.length));
    for (const s of cmd.sub) lines.push(`  ${s.name.padEnd(w)}  ${s.summary}`);
    lines.push(
      '',
      `run \`nestvirt ${path ? path + ' ' : ''}COMMAND --help\` for a command's options`,
    );
  }
  const flags = Object.entries(cmd.flags ?? {});
  if (flags.length) {
    lines.push('', 'options:');
    const names = flags.map(
      ([k, f]) =>
        `${f.short ? `-${f.short}, ` : ''}--${k}${f.type === 'string' ? ` ${f.arg ?? 'VALUE'}` : ''}`,
    );
    const w = Math.max(...names.map((n) => n.length));
    flags.forEach(([, f], i) => lines.push(`  ${names[i]!.padEnd(w)}  ${f.help}`));
  }
  return lines.join('\n') + '\n';
}
