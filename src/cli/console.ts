import type { Command } from './command.js';
import { attachConsole, consoleInUse, DETACH_KEY } from '../vm/console.js';
import { vmDeps } from '../vm/cli-support.js';
import { checkVmName } from '../vm/parse.js';
import { reconcile, vmPaths } from '../vm/state.js';
import { eprintln } from './output.js';
import { NotPossibleError } from '../errors.js';

export const consoleCommand: Command = {
  name: 'console',
  summary: `attach to a VM's serial console (detach with ${DETACH_KEY})`,
  usage: 'console VM',
  description: [
    `Keys go to the guest (Ctrl-C too); ${DETACH_KEY} (Ctrl and the right square bracket) detaches`,
    'and leaves the VM running. The terminal is restored however the console ends. With stdin',
    'not a terminal, input is piped to the console and the command returns once the input has',
    'ended and the console has been quiet for a moment:',
    '',
    '  echo "uname -a" | nestvirt console t1',
  ].join('\n'),
  positionals: [1, 1],
  async run(args, ctx) {
    const name = checkVmName(args.positionals[0]!);
    const p = vmPaths(vmDeps(ctx).root, name);
    const r = await reconcile(p, { write: 'try' });
    if (r.pid === null)
      throw new NotPossibleError(
        'vm.not-running',
        `VM ${name} is not running`,
        `start it: nestvirt start ${name} (its past output: nestvirt logs ${name})`,
      );
    if (await consoleInUse(p.qmp))
      throw new NotPossibleError(
        'vm.console-busy',
        `VM ${name}'s console is in use by another client`,
        `detach that one first (${DETACH_KEY}); meanwhile: nestvirt logs ${name} -f`,
      );
    const how = await attachConsole(p.serial, name, {
      stdin: process.stdin,
      stdout: ctx.out.stdout,
      note: (l) => eprintln(ctx.out, l),
    });
    return how === 'vm-stopped' ? 1 : 0;
  },
};
