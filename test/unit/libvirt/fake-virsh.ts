/**
 * A FAKE of virsh for unit tests (the integration test uses the real one):
 * an in-memory set of domains answering the subcommands nestvirt uses, with
 * virsh's real error texts. `define` stores the file's text verbatim
 * (libvirt would re-serialize it; the integration test covers that).
 */
import { readFile } from 'node:fs/promises';
import type { Runner, RunResult } from '../../../src/util/exec.js';

export interface FakeDomain {
  inactive: string;
  live?: string;
  state: 'running' | 'shut off';
}

export function fakeVirsh(
  domains: Map<string, FakeDomain>,
  caps: string,
): { runner: Runner; calls: string[][] } {
  const calls: string[][] = [];
  const res = (argv: string[], code: number, stdout: string, stderr = ''): RunResult => ({
    argv,
    code,
    signal: null,
    stdout,
    stderr,
    timedOut: false,
  });
  const runner: Runner = async (argv) => {
    calls.push(argv);
    const args = argv.slice(argv.indexOf('--connect') + 2).filter((a) => a !== '--');
    const [cmd, ...rest] = args;
    const name = rest[rest.length - 1] ?? '';
    const dom = domains.get(name);
    const notFound = (): RunResult => res(argv, 1, '', `error: failed to get domain '${name}'\n`);
    switch (cmd) {
      case 'capabilities':
        return res(argv, 0, caps);
      case 'list':
        return res(argv, 0, [...domains.keys()].join('\n') + '\n\n');
      case 'domstate':
        return dom ? res(argv, 0, `${dom.state}\n\n`) : notFound();
      case 'dumpxml':
        if (!dom) return notFound();
        return res(
          argv,
          0,
          (rest.includes('--inactive') || dom.state !== 'running'
            ? dom.inactive
            : (dom.live ?? dom.inactive)) + '\n',
        );
      case 'define': {
        const text = await readFile(name, 'utf8');
        const m = /<name>([^<]+)<\/name>/.exec(text);
        if (!m)
          return res(
            argv,
            1,
            '',
            'error: Failed to define domain\nerror: XML error: missing name\n',
          );
        const d = domains.get(m[1]!);
        if (d) d.inactive = text.replace(/\n$/, '');
        else domains.set(m[1]!, { inactive: text.replace(/\n$/, ''), state: 'shut off' });
        return res(argv, 0, `Domain '${m[1]}' defined from ${name}\n`);
      }
      default:
        return res(argv, 1, '', `error: fake virsh does not know ${cmd}\n`);
    }
  };
  return { runner, calls };
}
