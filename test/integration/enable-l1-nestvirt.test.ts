/**
 * nestvirt itself inside a real L1: the built-in `hypervisor` image (QEMU,
 * node and this very nestvirt build on an ext4 root) booted under TCG with
 * `-cpu max`. `nestvirt enable --persist` reloads the real kvm_amd with the
 * guest's own modprobe, verifies, writes its modprobe.d file and records the
 * change in the ledger; `nestvirt disable` refuses while a process holds
 * /dev/kvm (naming it), then undoes exactly what enable did.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp, rm } from 'node:fs/promises';
import { testImage } from '../helpers/images.js';
import { bootGuest, Qga, waitSerial } from './image-guest.js';
import { run } from '../../src/util/exec.js';

const CONF = '/etc/modprobe.d/nestvirt-nested.conf';
const LEDGER = '/var/lib/nestvirt/ledger/nesting.json';

test(
  'nestvirt enable --persist / disable inside a real L1 (hypervisor image, TCG -cpu max)',
  { timeout: 900_000 },
  async () => {
    const { spec } = await testImage('hypervisor');
    const dir = await mkdtemp(join(tmpdir(), 'nestvirt-enable-hv-'));
    const overlay = join(dir, 'disk.qcow2');
    await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', spec.disk!, overlay]);
    const g = await bootGuest(spec, { memMiB: 1024, overlay });
    try {
      await waitSerial(g, spec.readyMarker!, 300_000);
      const qga = await Qga.connect(g.qgaSock, 300_000);
      const sh = (cmd: string) =>
        qga.exec(`export NESTVIRT_HOME=/var/lib/nestvirt NO_COLOR=1; ${cmd}`, 300_000);
      try {
        const load = await sh(
          'modprobe -r kvm_amd 2>/dev/null; modprobe kvm_amd nested=0 && cat /sys/module/kvm_amd/parameters/nested',
        );
        assert.equal(load.code, 0, load.err);
        assert.equal(load.out, '0\n');

        const en = await sh('nestvirt enable --persist --json');
        assert.equal(en.code, 0, en.err);
        const j = JSON.parse(en.out);
        assert.deepEqual(
          {
            module: j.module,
            before: j.before,
            after: j.after,
            changed: j.changed,
            dryRun: j.dryRun,
          },
          { module: 'kvm_amd', before: false, after: true, changed: true, dryRun: false },
        );
        const state = await sh(
          `cat /sys/module/kvm_amd/parameters/nested; test -c /dev/kvm && echo kvm-dev; cat ${CONF}; cat ${LEDGER}`,
        );
        assert.equal(state.code, 0, state.err);
        assert.match(
          state.out,
          /^1\nkvm-dev\n# Written by nestvirt .*\n.*\noptions kvm_amd nested=1\n/,
        );
        const ledger = JSON.parse(state.out.slice(state.out.indexOf('{')));
        assert.deepEqual(ledger.changes, [
          { kind: 'nesting.file', path: CONF, previous: null, content: ledger.changes[0].content },
          { kind: 'nesting.param', module: 'kvm_amd', before: '0', after: '1' },
        ]);

        // A process holding /dev/kvm: disable refuses, names it, changes nothing.
        const hold = await sh('sleep 600 < /dev/kvm > /dev/null 2>&1 & echo $!');
        const pid = hold.out.trim();
        const refused = await sh('nestvirt disable');
        assert.equal(refused.code, 1);
        assert.match(
          refused.err,
          new RegExp(
            `^nestvirt: kvm_amd is in use by 1 VM: pid ${pid} \\(sleep\\); stop them first \\(shut down pid ${pid}\\) and retry\\n`,
            'm',
          ),
        );
        const unchanged = await sh(
          `kill ${pid}; cat /sys/module/kvm_amd/parameters/nested; test -f ${CONF} && echo conf; test -f ${LEDGER} && echo ledger`,
        );
        assert.equal(unchanged.out, '1\nconf\nledger\n');

        const dis = await sh('sleep 0.5; nestvirt disable --json');
        assert.equal(dis.code, 0, dis.err);
        const dj = JSON.parse(dis.out);
        assert.equal(dj.record, true);
        assert.equal(dj.after, false);
        const after = await sh(
          `cat /sys/module/kvm_amd/parameters/nested; test -e ${CONF} || echo no-conf; test -e ${LEDGER} || echo no-ledger; cat /etc/modprobe.d/nestvirt-kvm.conf`,
        );
        // The image's own modprobe.d file is untouched.
        assert.equal(
          after.out,
          '0\nno-conf\nno-ledger\noptions kvm_amd nested=1\noptions kvm_intel nested=1\n',
        );
      } finally {
        qga.close();
      }
    } finally {
      await g.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
