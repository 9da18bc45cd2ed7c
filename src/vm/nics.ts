/**
 * From `--net` and `--port` flags to the VM's NIC list (the NIC seam, see
 * docs/internals.md "VM network cards"). `user` is QEMU user-mode
 * networking (the default); `none` means no card; any other name is a
 * nestvirt network, resolved by the network layer into a tap NIC.
 */
import { UsageError } from '../errors.js';
import { checkForwards, parsePort } from './parse.js';
import type { NicSpec } from './types.js';

/** Resolves a named network into a NIC for a VM (provided by the network layer). */
export type NamedNetResolver = (net: string, vmName: string, index: number) => Promise<NicSpec>;

/** Builds the NIC list; `--port` forwards go to the (first) user-mode NIC. */
export async function nicsFromFlags(
  nets: string[],
  portSpecs: string[],
  vmName: string,
  resolveNamed?: NamedNetResolver,
): Promise<NicSpec[]> {
  const forwards = portSpecs.map(parsePort);
  checkForwards(forwards);
  const wanted = nets.length ? nets : ['user'];
  if (wanted.includes('none')) {
    if (wanted.length > 1)
      throw new UsageError('vm.bad-net', '--net none cannot be combined with other --net options');
    if (forwards.length)
      throw new UsageError(
        'vm.bad-net',
        '--port needs a user-mode network card, but --net none was given',
        'drop --net none (user networking is the default)',
      );
    return [];
  }
  const nics: NicSpec[] = [];
  let userSeen = false;
  for (const [i, n] of wanted.entries()) {
    if (n === 'user') {
      nics.push({ kind: 'user', forwards: userSeen ? [] : forwards });
      userSeen = true;
    } else if (resolveNamed) nics.push(await resolveNamed(n, vmName, i));
    else
      throw new UsageError(
        'vm.unknown-net',
        `--net ${JSON.stringify(n)}: no such network`,
        'use --net user (the default) or --net none; see `nestvirt net ls`',
      );
  }
  if (forwards.length && !userSeen)
    throw new UsageError(
      'vm.bad-net',
      '--port forwards through user-mode networking: add --net user',
      'e.g. --net user --port 2222:22',
    );
  return nics;
}
