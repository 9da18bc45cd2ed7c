/**
 * Where nestvirt keeps its state, and every on-disk file name in one place.
 * Root: $NESTVIRT_HOME, else /var/lib/nestvirt for root, else
 * $XDG_DATA_HOME/nestvirt (~/.local/share/nestvirt). See docs/internals.md.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export function stateRoot(
  env: NodeJS.ProcessEnv = process.env,
  uid = process.getuid?.() ?? 0,
): string {
  if (env.NESTVIRT_HOME) return env.NESTVIRT_HOME;
  if (uid === 0) return '/var/lib/nestvirt';
  const xdg = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(xdg, 'nestvirt');
}

/** Top-level folders under the state root. */
export const Dirs = {
  vms: 'vms',
  images: 'images',
  nets: 'nets',
  /** Downloaded .debs and other build inputs. */
  cache: 'cache',
  /** Host-change ledger entries. */
  ledger: 'ledger',
  locks: 'locks',
} as const;

/** File names inside an object's directory. */
export const Files = {
  /** The object's spec (JSON), written atomically. */
  spec: 'spec.json',
  /** Runtime status written by the starter (JSON). */
  runtime: 'runtime.json',
  pid: 'qemu.pid',
  qmp: 'qmp.sock',
  qga: 'qga.sock',
  serial: 'serial.sock',
  serialLog: 'serial.log',
  qemuLog: 'qemu.log',
  overlay: 'disk.qcow2',
  seed: 'seed.iso',
  /** The VM's own ssh key pair (ed25519) made when no --ssh-key was given; `.pub` beside it. */
  sshKey: 'id_ed25519',
  /** Host keys `nestvirt ssh` has accepted for this VM (StrictHostKeyChecking=accept-new). */
  sshKnownHosts: 'known_hosts',
  /** What the cloud-init layer put in the seed (instance id, keys, ssh user): JSON. */
  cloudInit: 'cloud-init.json',
  lock: '.lock',
} as const;

/** Object names: a letter first, then letters, digits, '-', '_' or '.', at most 63. */
export const NAME_RE = /^[a-zA-Z][a-zA-Z0-9_.-]{0,62}$/;
