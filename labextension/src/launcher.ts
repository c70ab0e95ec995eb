import { JupyterFrontEnd } from '@jupyterlab/application';
import { showDialog, Dialog } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IDisposable } from '@lumino/disposable';

import { scalableIcon } from './icons';

export const NEW_NOTEBOOK = 'scalable:new-notebook';
export const HOW_TO_INSTALL = 'scalable:install-kernel';

const INSTALL =
  'scalable kernel install --user --image <work_dir>/containers/scalable_container.sif';

/**
 * The launcher's "Scalable" card: a notebook on the Scalable kernel when that kernelspec
 * exists (named by the `kernelName` setting, or any `scalable*` one), else a card saying how
 * to install it. Follows kernelspec changes.
 */
export function addLauncherItem(
  app: JupyterFrontEnd,
  launcher: ILauncher,
  kernelName: () => string
): void {
  const specs = app.serviceManager.kernelspecs;
  const installed = (): string | null => {
    const names = Object.keys(specs.specs?.kernelspecs ?? {});
    return names.includes(kernelName())
      ? kernelName()
      : (names.find(n => n.startsWith('scalable')) ?? null);
  };
  app.commands.addCommand(NEW_NOTEBOOK, {
    label: 'Scalable Notebook',
    caption: 'A new notebook on the Scalable kernel',
    icon: scalableIcon,
    execute: async args => {
      const cwd = (args['cwd'] as string) ?? '';
      return app.commands.execute('notebook:create-new', {
        cwd,
        kernelName: installed() ?? kernelName()
      });
    }
  });
  app.commands.addCommand(HOW_TO_INSTALL, {
    label: 'Install the Scalable kernel',
    caption: 'How to install the Scalable kernel',
    icon: scalableIcon,
    execute: () =>
      showDialog({
        title: 'Install the Scalable kernel',
        body: `No Scalable kernel is installed here. In a terminal on this machine, run:\n\n${INSTALL}\n\nthen reload this page (scalable bootstrap does it for you).`,
        buttons: [Dialog.okButton()]
      })
  });
  let item: IDisposable | null = null;
  let shown: string | null = null;
  const update = (): void => {
    if (!specs.specs) {
      return;
    }
    const want = installed() ? NEW_NOTEBOOK : HOW_TO_INSTALL;
    if (want === shown) {
      return;
    }
    item?.dispose();
    item = launcher.add({ command: want, category: 'Scalable', rank: 0 });
    shown = want;
  };
  specs.specsChanged.connect(update);
  void specs.ready.then(update);
}
