/**
 * The command registry: one entry per top-level command, loaded on demand so
 * that a command pays only for its own modules at start-up (`nestvirt ls`
 * must not load the Google clients). Each command lives in its own thin file
 * under src/cli/.
 */
import type { Command } from './command.js';

export interface CommandRef {
  name: string;
  load(): Promise<Command>;
}

export const commandRefs: CommandRef[] = [
  { name: 'version', load: async () => (await import('./version.js')).versionCommand },
  { name: 'doctor', load: async () => (await import('./doctor.js')).doctorCommand },
  { name: 'enable', load: async () => (await import('./enable.js')).enableCommand },
  { name: 'disable', load: async () => (await import('./disable.js')).disableCommand },
  { name: 'image', load: async () => (await import('./image.js')).imageCommand },
  { name: 'run', load: async () => (await import('./run.js')).runCommand },
  { name: 'ls', load: async () => (await import('./ls.js')).lsCommand },
  { name: 'info', load: async () => (await import('./info.js')).infoCommand },
  { name: 'start', load: async () => (await import('./start.js')).startCommand },
  { name: 'stop', load: async () => (await import('./stop.js')).stopCommand },
  { name: 'kill', load: async () => (await import('./kill.js')).killCommand },
  { name: 'restart', load: async () => (await import('./restart.js')).restartCommand },
  { name: 'rm', load: async () => (await import('./rm.js')).rmCommand },
  { name: 'console', load: async () => (await import('./console.js')).consoleCommand },
  { name: 'logs', load: async () => (await import('./logs.js')).logsCommand },
  { name: 'exec', load: async () => (await import('./exec.js')).execCommand },
  { name: 'ssh', load: async () => (await import('./ssh.js')).sshCommand },
  { name: 'net', load: async () => (await import('./net.js')).netCommand },
  { name: 'expose', load: async () => (await import('./expose.js')).exposeCommand },
  { name: 'unexpose', load: async () => (await import('./unexpose.js')).unexposeCommand },
  { name: 'libvirt', load: async () => (await import('./libvirt.js')).libvirtCommand },
  { name: 'gcp', load: async () => (await import('./gcp.js')).gcpCommand },
  { name: 'demo', load: async () => (await import('./demo.js')).demoCommand },
];
