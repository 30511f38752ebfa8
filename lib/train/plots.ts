// Loss and accuracy curves at the end of a run: Vega-Lite specs rendered headless (renderer 'none' → SVG), and PNGs
// rasterised from the SVG by sharp.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import sharp from 'sharp';
import type { LogRecord } from './metrics.ts';

export interface Series { name: string; points: { step: number; value: number }[] }

/** A line chart of several series against the step, as SVG text. */
export async function lineChartSvg(title: string, yTitle: string, series: Series[]): Promise<string> {
  const values = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p.value)).map((p) => ({ ...p, series: s.name })));
  const spec: vl.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 560,
    height: 320,
    background: 'white',
    data: { values },
    mark: { type: 'line', point: values.length <= 60 },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'value', type: 'quantitative', title: yTitle, scale: { zero: false } },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export async function svgToPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
}

function seriesOf(records: LogRecord[], key: string, name: string): Series | null {
  const points = records.flatMap((r) => {
    const v = (r as unknown as Record<string, unknown>)[key];
    return typeof v === 'number' && Number.isFinite(v) ? [{ step: r.step, value: v }] : [];
  });
  return points.length ? { name, points } : null;
}

/** Writes loss.{svg,png} and, when any record has an accuracy, accuracy.{svg,png}; returns the files written. */
export async function writePlots(records: LogRecord[], dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const charts: [string, string, string, (Series | null)[]][] = [
    ['loss', 'Loss', 'loss', [seriesOf(records, 'loss', 'train'), seriesOf(records, 'eval_loss', 'eval')]],
    ['accuracy', 'Token accuracy', 'accuracy', [seriesOf(records, 'accuracy', 'train'), seriesOf(records, 'eval_accuracy', 'eval')]],
  ];
  for (const [file, title, yTitle, maybe] of charts) {
    const series = maybe.filter((s): s is Series => s !== null);
    if (!series.length) continue;
    const svg = await lineChartSvg(title, yTitle, series);
    writeFileSync(join(dir, `${file}.svg`), svg);
    writeFileSync(join(dir, `${file}.png`), await svgToPng(svg));
    written.push(join(dir, `${file}.svg`), join(dir, `${file}.png`));
  }
  return written;
}
