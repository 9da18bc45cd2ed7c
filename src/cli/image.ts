/**
 * `nestvirt image ls | build NAME | import NAME SRC | rm NAME` — thin: parses
 * flags, calls src/image, prints.
 */
import type { Command, Context } from './command.js';
import { bool, str } from './command.js';
import { Progress, eprintln, paint, printJson, println, table } from './output.js';
import { stateRoot } from '../state/paths.js';
import { BUILTINS, isBuiltin } from '../image/recipe.js';
import { getImage, listImages, removeImage } from '../image/store.js';
import type { ImageSpec } from '../image/types.js';
import { UsageError } from '../errors.js';

function root(ctx: Context): string {
  return stateRoot(ctx.env, ctx.uid);
}

function human(bytes: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let n = bytes;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

/** The `image ls --json` row (documented in docs/images.md). */
export interface ImageRow {
  name: string;
  builtin: boolean;
  built: boolean;
  sizeBytes: number | null;
  createdAt: string | null;
  kind: 'kernel+initrd' | 'kernel+initrd+disk' | 'disk' | null;
  diskFormat: string | null;
  inputsHash: string | null;
  sha256: string | null;
  source: string | null;
}

function kind(s: ImageSpec): ImageRow['kind'] {
  if (s.kernel && s.disk) return 'kernel+initrd+disk';
  if (s.kernel) return 'kernel+initrd';
  return 'disk';
}

const lsCommand: Command = {
  name: 'ls',
  summary: 'list images (built-ins are listed even before their first build)',
  usage: 'image ls [--json]',
  positionals: [0, 0],
  flags: {
    json: { type: 'boolean', help: 'print a JSON array of images (schema in docs/images.md)' },
  },
  async run(args, ctx) {
    const specs = await listImages(root(ctx));
    const rows: ImageRow[] = specs.map((s) => ({
      name: s.name,
      builtin: s.builtin,
      built: true,
      sizeBytes: s.sizeBytes,
      createdAt: s.createdAt,
      kind: kind(s),
      diskFormat: s.diskFormat ?? null,
      inputsHash: s.inputsHash ?? null,
      sha256: s.sha256 ?? null,
      source: s.source ?? null,
    }));
    for (const b of BUILTINS)
      if (!rows.some((r) => r.name === b))
        rows.push({
          name: b,
          builtin: true,
          built: false,
          sizeBytes: null,
          createdAt: null,
          kind: null,
          diskFormat: null,
          inputsHash: null,
          sha256: null,
          source: null,
        });
    rows.sort((a, b) => (a.name < b.name ? -1 : 1));
    if (bool(args, 'json')) {
      printJson(ctx.out, rows);
      return 0;
    }
    const t = [['NAME', 'TYPE', 'SIZE', 'CREATED', 'SOURCE']];
    for (const r of rows)
      t.push([
        r.name,
        r.builtin ? 'built-in' : `imported ${r.diskFormat ?? ''}`.trim(),
        r.sizeBytes === null ? paint(ctx.out, 'gray', 'not built') : human(r.sizeBytes),
        r.createdAt ? r.createdAt.slice(0, 19).replace('T', ' ') : '-',
        r.builtin ? `${r.kind ?? '-'}` : (r.source ?? '-'),
      ]);
    println(ctx.out, table(t));
    return 0;
  },
};

const buildCommand: Command = {
  name: 'build',
  summary: 'build a built-in image (tiny, hypervisor) now; rebuilt only when its inputs changed',
  usage: 'image build NAME [--force] [--json]',
  description: [
    'Builds offline from Debian packages: the kernel comes from the current linux-image',
    'package (apt-get download into the cache: $NESTVIRT_CACHE, else <root>/cache).',
    '',
    'example:',
    '  nestvirt image build tiny',
  ].join('\n'),
  positionals: [1, 1],
  flags: {
    force: { type: 'boolean', help: 'rebuild even when the inputs are unchanged' },
    json: { type: 'boolean', help: 'print the image spec as JSON when done' },
  },
  async run(args, ctx) {
    const name = args.positionals[0]!;
    if (!isBuiltin(name))
      throw new UsageError(
        'image.not-builtin',
        `${JSON.stringify(name)} is not a built-in image (built-ins: ${BUILTINS.join(', ')})`,
        `import a disk instead: nestvirt image import ${name} FILE|URL`,
      );
    const t0 = performance.now();
    const spec = await getImage({
      root: root(ctx),
      name,
      run: ctx.run,
      env: ctx.env,
      progress: new Progress(ctx.out),
      rebuild: bool(args, 'force'),
      note: (l) => eprintln(ctx.out, l),
    });
    if (bool(args, 'json')) printJson(ctx.out, spec);
    else
      println(
        ctx.out,
        `${paint(ctx.out, 'green', 'image')} ${name} ready (${human(spec.sizeBytes)}, ${((performance.now() - t0) / 1000).toFixed(1)}s)`,
      );
    return 0;
  },
};

const importCommandLater: Command | undefined = undefined;
/* IMPORT-START
const importCommand0 = {
  name: 'import',
  summary: 'import a qcow2, raw or distribution cloud image from a file or an http(s) URL',
  usage: 'image import NAME FILE|URL [--sha256 HEX] [--json]',
  description: [
    'The format is detected with `qemu-img info`; nothing is converted unless needed.',
    'Downloads resume (HTTP Range) after an interruption; the checksum is verified',
    'before the image is stored; a wrong one stores nothing and exits 2.',
    '',
    'example:',
    '  nestvirt image import deb12 https://example.org/debian-12-genericcloud-amd64.qcow2 --sha256 <hex>',
  ].join('\n'),
  positionals: [2, 2],
  flags: {
    sha256: { type: 'string', arg: 'HEX', help: 'expected sha256 of the file (verified before use)' },
    json: { type: 'boolean', help: 'print the image spec as JSON when done' },
  },
  async run(args, ctx) {
    const [name, src] = args.positionals as [string, string];
    const spec = await importImage({
      root: root(ctx),
      name,
      source: src,
      sha256: str(args, 'sha256'),
      run: ctx.run,
      env: ctx.env,
      out: ctx.out,
      progress: new Progress(ctx.out),
    });
    if (bool(args, 'json')) printJson(ctx.out, spec);
    else println(ctx.out, `${paint(ctx.out, 'green', 'image')} ${name} imported (${spec.diskFormat}, ${human(spec.sizeBytes)})`);
    return 0;
  },
};

IMPORT-END */

const rmCommand: Command = {
  name: 'rm',
  summary: 'remove an image (refused while a VM uses it)',
  usage: 'image rm NAME... [--json]',
  positionals: [1, Infinity],
  flags: { json: { type: 'boolean', help: 'print {"removed": [NAME...]}' } },
  async run(args, ctx) {
    const removed: string[] = [];
    for (const n of args.positionals) {
      await removeImage(root(ctx), n);
      removed.push(n);
    }
    if (bool(args, 'json')) printJson(ctx.out, { removed });
    else for (const n of removed) println(ctx.out, `removed image ${n}`);
    return 0;
  },
};

export const imageCommand: Command = {
  name: 'image',
  summary: 'built-in (tiny, hypervisor) and imported images: ls, build, import, rm',
  usage: 'image ls | build NAME | import NAME FILE|URL | rm NAME',
  sub: [lsCommand, buildCommand, rmCommand],
};
