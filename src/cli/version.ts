import type { Command } from './command.js';
import { bool } from './command.js';
import { println, printJson } from './output.js';
import { VERSION } from '../version.js';

export const versionCommand: Command = {
  name: 'version',
  summary: 'print the nestvirt version',
  usage: 'version [--json]',
  positionals: [0, 0],
  flags: { json: { type: 'boolean', help: 'print {"version": "..."}' } },
  async run(args, ctx) {
    if (bool(args, 'json')) printJson(ctx.out, { version: VERSION });
    else println(ctx.out, `nestvirt ${VERSION}`);
    return 0;
  },
};
