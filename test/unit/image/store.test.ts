import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tempHome } from '../../helpers/cli.js';
import {
  getImage,
  install,
  listImages,
  removeImage,
  vmsUsingImage,
  withImageLock,
  cacheDir,
} from '../../../src/image/store.js';
import type { ImageSpec } from '../../../src/image/types.js';
import { run } from '../../../src/util/exec.js';

function spec(name: string, disk: string): ImageSpec {
  return {
    name,
    builtin: false,
    disk,
    diskFormat: 'raw',
    features: {
      guestAgent: false,
      sshd: false,
      cloudInit: false,
      kvmModules: false,
      nestvirt: false,
    },
    arch: 'x86_64',
    sizeBytes: 3,
    createdAt: '2026-11-23T00:00:00.000Z',
  };
}

test('install: a failure (e.g. ENOSPC) part-way leaves nothing; success renames into place', async () => {
  const root = await tempHome();
  try {
    const full = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    await assert.rejects(
      install(root, 'x', async (dir) => {
        await writeFile(join(dir, 'disk.raw'), 'abc');
        throw full;
      }),
      /no space left/,
    );
    assert.deepEqual(await readdir(join(root, 'images')), []);
    const s = await install(root, 'x', async (dir, finalDir) => {
      await writeFile(join(dir, 'disk.raw'), 'abc');
      return spec('x', join(finalDir, 'disk.raw'));
    });
    assert.equal(await readFile(s.disk!, 'utf8'), 'abc');
    // Replacing keeps exactly one directory, with the new content.
    await install(root, 'x', async (dir, finalDir) => {
      await writeFile(join(dir, 'disk.raw'), 'def');
      return spec('x', join(finalDir, 'disk.raw'));
    });
    assert.deepEqual(await readdir(join(root, 'images')), ['x']);
    assert.equal(await readFile(s.disk!, 'utf8'), 'def');
    assert.deepEqual(
      (await listImages(root)).map((i) => i.name),
      ['x'],
    );
    assert.deepEqual((await getImage({ root, name: 'x', run })).disk, s.disk);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('getImage: unknown names and bad names are usage errors with the fix', async () => {
  const root = await tempHome();
  try {
    await assert.rejects(
      getImage({ root, name: 'nope', run }),
      (e: { exitCode: number; message: string; hint: string }) => {
        assert.equal(e.exitCode, 2);
        assert.match(e.message, /no image named "nope"/);
        assert.match(e.hint, /nestvirt image import nope/);
        return true;
      },
    );
    await assert.rejects(getImage({ root, name: '../etc', run }), /invalid image name/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('vmsUsingImage reads vms/*/spec.json; removeImage refuses and names them', async () => {
  const root = await tempHome();
  try {
    await install(root, 'base', async (dir, finalDir) => {
      await writeFile(join(dir, 'disk.raw'), 'abc');
      return spec('base', join(finalDir, 'disk.raw'));
    });
    for (const [vm, image] of [
      ['a', 'base'],
      ['b', 'other'],
      ['c', 'base'],
    ]) {
      await mkdir(join(root, 'vms', vm!), { recursive: true });
      await writeFile(join(root, 'vms', vm!, 'spec.json'), JSON.stringify({ name: vm, image }));
    }
    await mkdir(join(root, 'vms', 'broken'), { recursive: true });
    assert.deepEqual(await vmsUsingImage(root, 'base'), ['a', 'c']);
    await assert.rejects(removeImage(root, 'base'), /image base is used by VMs a, c/);
    await rm(join(root, 'vms'), { recursive: true });
    await removeImage(root, 'base');
    assert.deepEqual(await listImages(root), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('the image lock makes a second command wait for the first', async () => {
  const root = await tempHome();
  try {
    const order: string[] = [];
    const first = withImageLock(root, 'tiny', async () => {
      order.push('first:start');
      await new Promise((r) => setTimeout(r, 300));
      order.push('first:end');
    });
    await new Promise((r) => setTimeout(r, 50));
    const second = withImageLock(root, 'tiny', async () => {
      order.push('second');
    });
    await Promise.all([first, second]);
    assert.deepEqual(order, ['first:start', 'first:end', 'second']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('cacheDir: $NESTVIRT_CACHE, else <root>/cache', () => {
  assert.equal(cacheDir('/r', { NESTVIRT_CACHE: '/c' }), '/c');
  assert.equal(cacheDir('/r', {}), '/r/cache');
});
