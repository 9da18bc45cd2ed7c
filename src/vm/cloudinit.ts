/**
 * cloud-init for nestvirt VMs: a NoCloud seed (an ISO labelled `cidata`
 * holding meta-data, user-data, vendor-data and, when needed,
 * network-config).
 *
 * Rendering is pure (`renderSeed` turns a VM's facts into a list of
 * `{path, content}`, like Lima's pkg/cidata); reading and checking the
 * user's files, making keys and writing the ISO are separate steps.
 * NoCloud format: https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html
 */
import { crypto, yaml } from '../util/lazy.js';
import { access, mkdir, readFile, rm, writeFile, rename, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { NestvirtError, ExitCode, UsageError } from '../errors.js';
import type { Runner } from '../util/exec.js';
import { Files } from '../state/paths.js';
import { readJson, writeJson } from '../state/store.js';

/** One file of the seed, relative to the ISO's root. */
export interface SeedFile {
  path: 'meta-data' | 'user-data' | 'vendor-data' | 'network-config';
  content: string;
}

/** The kinds of user-data nestvirt accepts (cloud-init's own header rules). */
export type UserDataKind = 'cloud-config' | 'script' | 'multipart';

/** User-data that passed `checkUserData`: passed to the guest byte for byte. */
export interface UserData {
  kind: UserDataKind;
  text: string;
  /** Where it came from, for messages and `info`. */
  source: string;
}

/** A NIC that needs an explicit configuration (a bridge network with a fixed address). */
export interface NicConfig {
  /** MAC address the guest sees, lower case `52:54:00:..`. */
  mac: string;
  /** `dhcp`, or static addresses in CIDR form (`10.77.0.5/24`). */
  addresses: 'dhcp' | string[];
  gateway?: string;
  nameservers?: string[];
}

export interface SeedInput {
  /** The VM's name; the guest's hostname unless user-data sets another. */
  name: string;
  /** Stable for the life of the VM, new for every VM (see `instanceIdFor`). */
  instanceId: string;
  /** Public keys (one authorized_keys line each) for the image's default user. */
  sshKeys: string[];
  userData?: UserData;
  /** NICs needing explicit configuration; none means cloud-init's DHCP fallback. */
  nics?: NicConfig[];
}

/** A valid hostname from a VM name: letters, digits and '-', at most 63. */
export function hostnameFor(name: string): string {
  const h = name
    .replace(/[^A-Za-z0-9.-]/g, '-')
    .split('.')[0]!
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
  return h || 'nestvirt';
}

/**
 * The cloud-init instance id: the same across reboots of one VM (so
 * per-instance modules run once) and different for a re-created VM of the
 * same name (so they run again).
 */
export function instanceIdFor(name: string, createdAt: string): string {
  const h = crypto()
    .createHash('sha256')
    .update(`${name}\0${createdAt}`)
    .digest('hex')
    .slice(0, 12);
  return `nestvirt-${hostnameFor(name)}-${h}`;
}

/**
 * Renders the NoCloud seed. The user's user-data goes in unchanged; ssh keys
 * go in meta-data `public-keys`, which cloud-init gives to the image's
 * default user (`debian` on Debian cloud images), so they never clash with
 * the user's own `users:` or `ssh_authorized_keys:`.
 */
export function renderSeed(input: SeedInput): SeedFile[] {
  const meta: Record<string, unknown> = {
    'instance-id': input.instanceId,
    'local-hostname': hostnameFor(input.name),
  };
  if (input.sshKeys.length) meta['public-keys'] = [...input.sshKeys];
  const files: SeedFile[] = [
    { path: 'meta-data', content: yaml().stringify(meta, { lineWidth: 0 }) },
    { path: 'user-data', content: input.userData?.text ?? '#cloud-config\n{}\n' },
    { path: 'vendor-data', content: vendorData() },
  ];
  if (input.nics?.length)
    files.push({ path: 'network-config', content: renderNetworkConfig(input.nics) });
  return files;
}

/**
 * nestvirt's defaults, which the user's user-data overrides key by key.
 * Host keys: skip RSA, whose generation takes many seconds on a guest
 * running under TCG; ed25519 and ECDSA cover every current ssh client.
 */
function vendorData(): string {
  return [
    '#cloud-config',
    '# nestvirt defaults; user-data overrides them',
    'ssh_genkeytypes: [ed25519, ecdsa]',
    'ssh_pwauth: false',
    '',
  ].join('\n');
}

/** network-config version 2, each NIC matched by MAC. */
export function renderNetworkConfig(nics: NicConfig[]): string {
  const ethernets: Record<string, unknown> = {};
  nics.forEach((nic, i) => {
    const mac = nic.mac.toLowerCase();
    if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac))
      throw new NestvirtError(
        'cloudinit.bad-mac',
        `network-config: bad MAC address ${JSON.stringify(nic.mac)}`,
      );
    const eth: Record<string, unknown> = { match: { macaddress: mac }, 'set-name': `eth${i}` };
    if (nic.addresses === 'dhcp') eth['dhcp4'] = true;
    else {
      eth['dhcp4'] = false;
      eth['addresses'] = [...nic.addresses];
      if (nic.gateway) eth['gateway4'] = nic.gateway;
    }
    if (nic.nameservers?.length) eth['nameservers'] = { addresses: [...nic.nameservers] };
    ethernets[`eth${i}`] = eth;
  });
  return yaml().stringify({ version: 2, ethernets }, { lineWidth: 0 });
}

// ---------------------------------------------------------------- user-data

/**
 * Checks user-data the way cloud-init will read it: `#cloud-config` must be
 * a YAML mapping, `#!` is a script, `Content-Type: multipart/...` a MIME
 * archive. Throws a one-line UsageError naming the file (and line).
 */
export function checkUserData(text: string, source: string): UserData {
  const what = `user-data ${source}`;
  const body = text.replace(/^\uFEFF/, '');
  if (body.trim() === '')
    throw new UsageError(
      'cloudinit.user-data-empty',
      `${what} is empty`,
      'start it with #cloud-config (YAML) or #! (a script)',
    );
  const first = body.split('\n', 1)[0]!.replace(/\r$/, '');
  if (/^#cloud-config\s*$/.test(first)) {
    const doc = yaml().parseDocument(body, {
      version: '1.1',
      uniqueKeys: false,
      prettyErrors: true,
    });
    const err = doc.errors[0];
    if (err) {
      const line = err.linePos?.[0]?.line;
      const why = err.message.split('\n', 1)[0]!.replace(/ at line \d+, column \d+:?$/, '');
      throw new UsageError(
        'cloudinit.user-data-yaml',
        `${what}${line ? ` line ${line}` : ''}: invalid YAML: ${why}`,
        'fix the YAML (indent with spaces, quote values containing ": " or "#"), then retry',
      );
    }
    const v: unknown = doc.contents;
    if (v !== null && !yaml().isMap(v))
      throw new UsageError(
        'cloudinit.user-data-not-mapping',
        `${what}: #cloud-config must be a YAML mapping (key: value lines), got a ${yamlKind(v)}`,
        'write it as key: value lines, e.g. `hostname: web1`',
      );
    return { kind: 'cloud-config', text: body, source };
  }
  if (first.startsWith('#!')) return { kind: 'script', text: body, source };
  if (isMultipart(body)) return { kind: 'multipart', text: body, source };
  throw new UsageError(
    'cloudinit.user-data-kind',
    `${what} starts with ${JSON.stringify(first.slice(0, 40))}: expected #cloud-config, a #! script or a MIME multipart message`,
    'put `#cloud-config` alone on the first line of a cloud-config file',
  );
}

function yamlKind(v: unknown): string {
  const t = (v as { constructor?: { name?: string } })?.constructor?.name ?? typeof v;
  return t === 'YAMLSeq' ? 'list' : t === 'Scalar' ? 'single value' : t;
}

/** A MIME message whose top-level Content-Type is multipart (the headers come first). */
function isMultipart(text: string): boolean {
  const headerEnd = text.search(/\r?\n\r?\n/);
  const headers = headerEnd < 0 ? text : text.slice(0, headerEnd);
  if (!/^[A-Za-z][A-Za-z0-9-]*:/.test(headers)) return false;
  return /^content-type:\s*multipart\/[a-z-]+/im.test(headers);
}

/** Reads and checks a user-data file; one-line UsageError when it cannot be read. */
export async function readUserData(path: string): Promise<UserData> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw new UsageError(
      'cloudinit.user-data-unreadable',
      `cannot read user-data ${path}: ${errnoText(e)}`,
      'pass a readable file: --user-data FILE',
    );
  }
  if (buf.includes(0))
    throw new UsageError(
      'cloudinit.user-data-binary',
      `user-data ${path} is not text`,
      'pass a #cloud-config YAML file or a #! script',
    );
  return checkUserData(buf.toString('utf8'), path);
}

// ---------------------------------------------------------------- ssh keys

/** Key types ssh accepts in authorized_keys (`ssh -Q key`). */
const KEY_TYPES = [
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
  'ssh-dss',
];

/**
 * Parses public keys (authorized_keys lines: `TYPE BASE64 [comment]`),
 * checking that the base64 blob really is a key of the stated type.
 */
export function parsePublicKeys(text: string, source: string): string[] {
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    const pub = source.endsWith('.pub') ? undefined : `${source}.pub`;
    throw new UsageError(
      'cloudinit.ssh-key-private',
      `${source} is a private key; --ssh-key takes the public key`,
      pub
        ? `pass the public key: --ssh-key ${pub}`
        : 'pass the public key file (ssh-keygen -y -f PRIVATE > KEY.pub)',
    );
  }
  const keys: string[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const where = lines.length > 1 ? `${source} line ${i + 1}` : source;
    const m = /^(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    const type = m?.[1] ?? line;
    if (!m || !KEY_TYPES.includes(type))
      throw new UsageError(
        'cloudinit.ssh-key-format',
        `${where} is not an ssh public key: expected "ssh-ed25519 AAAA...", "ssh-rsa AAAA..." or "ecdsa-sha2-nistp256 AAAA..."`,
        'pass a .pub file made by ssh-keygen, e.g. --ssh-key ~/.ssh/id_ed25519.pub',
      );
    const blob = m[2]!;
    if (!/^AAAA[A-Za-z0-9+/]+={0,2}$/.test(blob) || blobType(blob) !== type)
      throw new UsageError(
        'cloudinit.ssh-key-corrupt',
        `${where}: the ${type} key data is corrupt (its base64 does not hold a ${type} key)`,
        'copy the whole line of the .pub file, or regenerate it: ssh-keygen -y -f PRIVATE > KEY.pub',
      );
    keys.push(m[3] ? `${type} ${blob} ${m[3]}` : `${type} ${blob}`);
  });
  if (!keys.length)
    throw new UsageError(
      'cloudinit.ssh-key-empty',
      `${source} holds no ssh public key`,
      'pass a .pub file made by ssh-keygen',
    );
  return keys;
}

/** The key type written inside an ssh public key blob (a length-prefixed string). */
function blobType(b64: string): string | undefined {
  const buf = Buffer.from(b64, 'base64');
  if (buf.length < 4) return undefined;
  const n = buf.readUInt32BE(0);
  if (n > 64 || buf.length < 4 + n) return undefined;
  return buf.subarray(4, 4 + n).toString('latin1');
}

/** Reads one --ssh-key file. */
export async function readPublicKeyFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new UsageError(
      'cloudinit.ssh-key-unreadable',
      `cannot read ssh key ${path}: ${errnoText(e)}`,
      'pass a readable public key file: --ssh-key FILE.pub',
    );
  }
  return parsePublicKeys(text, path);
}

/** The private key next to a .pub file, when it exists (used by `nestvirt ssh -i`). */
export async function privateKeyFor(pubPath: string): Promise<string | undefined> {
  if (!pubPath.endsWith('.pub')) return undefined;
  const priv = pubPath.slice(0, -4);
  try {
    await access(priv);
    return priv;
  } catch {
    return undefined;
  }
}

/**
 * Makes the VM's own key pair (ed25519, no passphrase) in its directory,
 * so `nestvirt ssh` works without any set-up. Returns the public key line.
 */
export async function generateVmKey(vmDir: string, vmName: string, run: Runner): Promise<string> {
  const key = join(vmDir, Files.sshKey);
  await rm(key, { force: true });
  await rm(`${key}.pub`, { force: true });
  await run([
    'ssh-keygen',
    '-q',
    '-t',
    'ed25519',
    '-N',
    '',
    '-C',
    `nestvirt@${hostnameFor(vmName)}`,
    '-f',
    key,
  ]);
  const keys = parsePublicKeys(await readFile(`${key}.pub`, 'utf8'), `${key}.pub`);
  return keys[0]!;
}

// ---------------------------------------------------------------- the ISO

/**
 * Writes the seed as an ISO 9660 image labelled `cidata` (Joliet + Rock
 * Ridge, as cloud-init's NoCloud expects), atomically: the files are staged
 * and the ISO made under temporary names in the VM directory, then renamed
 * to `seed.iso`.
 */
export async function writeSeedIso(files: SeedFile[], vmDir: string, run: Runner): Promise<string> {
  const tag = crypto().randomBytes(4).toString('hex');
  const stage = join(vmDir, `.seed.${tag}.d`);
  const tmpIso = join(vmDir, `.seed.${tag}.iso`);
  const dest = join(vmDir, Files.seed);
  try {
    await mkdir(stage, { recursive: true });
    for (const f of files)
      await writeFile(join(stage, basename(f.path)), f.content, { mode: 0o600 });
    await run(
      [
        'xorriso',
        '-as',
        'mkisofs',
        '-quiet',
        '-output',
        tmpIso,
        '-volid',
        'cidata',
        '-joliet',
        '-rock',
        stage,
      ],
      {
        timeoutMs: 60_000,
      },
    );
    const st = await stat(tmpIso);
    if (st.size === 0)
      throw new NestvirtError(
        'cloudinit.seed-empty',
        `xorriso made an empty seed ISO at ${tmpIso}`,
        { exitCode: ExitCode.INTERNAL },
      );
    await rename(tmpIso, dest);
    return dest;
  } finally {
    await rm(stage, { recursive: true, force: true });
    await rm(tmpIso, { force: true });
  }
}

function errnoText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return code ?? String((e as Error)?.message ?? e);
}

// ---------------------------------------------------------------- for `run`

/** The user's cloud-init inputs, read and checked before anything is created. */
export interface CloudInitInputs {
  userData?: UserData;
  /** Public keys from --ssh-key files, in order. */
  sshKeys: string[];
  /** The --ssh-key files given. */
  keyFiles: string[];
  /** A private key next to the first --ssh-key file, for `nestvirt ssh -i`. */
  identity?: string;
}

/** What the cloud-init layer recorded for a VM: <vm dir>/cloud-init.json. */
export interface CloudInitRecord {
  schema: 1;
  instanceId: string;
  hostname: string;
  userData: { source: string; kind: UserDataKind; sha256: string } | null;
  /** Public keys in the seed (for the image's default user). */
  sshKeys: string[];
  /** Key nestvirt made for this VM (absolute path of the private key), else null. */
  generatedKey: string | null;
  /** Private key `nestvirt ssh` uses; null: ssh's own defaults. */
  identity: string | null;
  /** User `nestvirt ssh` logs in as. */
  sshUser: string;
}

/**
 * Reads and checks --user-data and --ssh-key files against the image: all
 * problems are found before the VM exists, so a bad file leaves nothing.
 */
export async function loadCloudInitInputs(
  opts: { userData?: string; sshKeys: string[] },
  image: { name: string; features: { cloudInit: boolean } },
): Promise<CloudInitInputs | undefined> {
  const asked = opts.userData !== undefined || opts.sshKeys.length > 0;
  if (!image.features.cloudInit) {
    if (asked)
      throw new UsageError(
        'cloudinit.image-without-cloud-init',
        `image ${image.name} has no cloud-init, so ${opts.userData !== undefined ? '--user-data' : '--ssh-key'} would be ignored`,
        'use an image with cloud-init (e.g. a distribution cloud image: nestvirt image import NAME FILE)',
      );
    return undefined;
  }
  const inputs: CloudInitInputs = { sshKeys: [], keyFiles: [...opts.sshKeys] };
  if (opts.userData !== undefined) inputs.userData = await readUserData(opts.userData);
  for (const f of opts.sshKeys)
    for (const k of await readPublicKeyFile(f))
      if (!inputs.sshKeys.includes(k)) inputs.sshKeys.push(k);
  const first = opts.sshKeys[0];
  if (first) {
    // Absolute: `nestvirt ssh` may run from another directory.
    const priv = await privateKeyFor(resolve(first));
    if (priv) inputs.identity = priv;
  }
  return inputs;
}

/**
 * Writes the VM's cloud-init: its own key pair when no --ssh-key was given,
 * the seed ISO and cloud-init.json, all inside the VM directory. Returns the
 * seed's path for the VM spec.
 */
export async function writeCloudInit(
  vm: { name: string; dir: string; createdAt: string },
  image: { sshUser?: string },
  inputs: CloudInitInputs,
  run: Runner,
  nics?: NicConfig[],
): Promise<{ seed: string; record: CloudInitRecord }> {
  const keys = [...inputs.sshKeys];
  let generatedKey: string | null = null;
  if (!keys.length) {
    keys.push(await generateVmKey(vm.dir, vm.name, run));
    generatedKey = join(vm.dir, Files.sshKey);
  }
  const instanceId = instanceIdFor(vm.name, vm.createdAt);
  const files = renderSeed({
    name: vm.name,
    instanceId,
    sshKeys: keys,
    ...(inputs.userData ? { userData: inputs.userData } : {}),
    ...(nics?.length ? { nics } : {}),
  });
  const seed = await writeSeedIso(files, vm.dir, run);
  const record: CloudInitRecord = {
    schema: 1,
    instanceId,
    hostname: hostnameFor(vm.name),
    userData: inputs.userData
      ? {
          source: inputs.userData.source,
          kind: inputs.userData.kind,
          sha256: crypto().createHash('sha256').update(inputs.userData.text).digest('hex'),
        }
      : null,
    sshKeys: keys,
    generatedKey,
    identity: generatedKey ?? inputs.identity ?? null,
    sshUser: image.sshUser ?? 'debian',
  };
  await writeJson(join(vm.dir, Files.cloudInit), record);
  return { seed, record };
}

/** Reads a VM's cloud-init.json; undefined when the VM has no seed. */
export async function readCloudInitRecord(vmDir: string): Promise<CloudInitRecord | undefined> {
  return readJson<CloudInitRecord>(join(vmDir, Files.cloudInit));
}

/** A locally administered MAC for a VM's NIC, stable for (VM name, NIC index). */
export function macFor(vmName: string, index: number): string {
  const h = crypto().createHash('sha256').update(`${vmName}\0${index}`).digest();
  return [
    '52',
    '54',
    '00',
    ...[h[0]!, h[1]!, h[2]!].map((b) => b.toString(16).padStart(2, '0')),
  ].join(':');
}

/**
 * With a user-mode NIC only, cloud-init's fallback (DHCP on the first NIC)
 * is right and no network-config is written. With several NICs (a bridge
 * network's tap besides or instead of user-mode), every NIC is configured
 * for DHCP by MAC; NICs without a MAC get a stable one here. Returns the
 * NICs to create the VM with and the network-config input (none: fallback).
 */
export function nicsForCloudInit<N extends { kind: string; mac?: string }>(
  vmName: string,
  nics: N[],
): { nics: N[]; config: NicConfig[] | undefined } {
  if (nics.length <= 1 && nics.every((n) => n.kind === 'user')) return { nics, config: undefined };
  const withMacs = nics.map((n, i) => (n.mac ? n : { ...n, mac: macFor(vmName, i) }));
  return {
    nics: withMacs,
    config: withMacs.map((n) => ({ mac: n.mac!, addresses: 'dhcp' as const })),
  };
}
