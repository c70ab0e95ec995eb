import { LabIcon } from '@jupyterlab/ui-components';

// Three stacked boxes of different widths: pools of workers, one per container tag.
const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="3" y="3" width="18" height="5" rx="1"/>
    <rect x="3" y="10" width="12" height="5" rx="1"/>
    <rect x="3" y="17" width="7" height="5" rx="1"/>
  </g>
</svg>`;

export const scalableIcon = new LabIcon({ name: 'scalable:icon', svgstr: svg });
