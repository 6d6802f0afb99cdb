//! A scenario's timeline as one SVG: steps as labelled spans (faults red, heals green), API writes
//! per second (ok/failed) and mock KMS calls per second (ok/failed), on one time axis.

use kms_lab_scenarios::runner::ScenarioOutcome;
use kms_lab_scenarios::timeline::Verb;
use plotters::prelude::*;

use crate::derive::{StepKind, step_kind};

const FAILED: RGBColor = RGBColor(200, 40, 40);
const OK: RGBColor = RGBColor(40, 140, 60);
const STEP: RGBColor = RGBColor(90, 110, 170);

/// The SVG text of a scenario's timeline; `Err` holds the drawing backend's message.
pub fn timeline_svg(scenario: &ScenarioOutcome) -> Result<String, String> {
    let mut text = String::new();
    draw(scenario, &mut text)?;
    Ok(text)
}

/// Counts per whole second, from 0 to `seconds` (exclusive).
fn per_second(times: impl Iterator<Item = f64>, seconds: usize) -> Vec<u32> {
    let mut bins = vec![0u32; seconds];
    for t in times {
        let i = (t.max(0.0) as usize).min(seconds.saturating_sub(1));
        if let Some(bin) = bins.get_mut(i) {
            *bin += 1;
        }
    }
    bins
}

fn draw(scenario: &ScenarioOutcome, text: &mut String) -> Result<(), String> {
    let e = |error: &dyn std::fmt::Display| error.to_string();
    let timeline = &scenario.timeline;
    let end = scenario
        .steps
        .iter()
        .map(|s| s.started_s + s.seconds)
        .chain(timeline.api.iter().map(|a| a.at_s))
        .chain(timeline.kms.iter().map(|k| k.at_s))
        .fold(1.0f64, f64::max);
    let seconds = end.ceil() as usize + 1;
    let x_end = seconds as f64;
    let steps = scenario.steps.len().max(1);
    let steps_height = 60 + 22 * steps as u32;
    let root = SVGBackend::with_string(text, (960, steps_height + 340)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(steps_height);
    let (middle, lowest) = bottom.split_vertically(170);

    // Steps as spans, one row each, labelled with their number and label.
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{}: steps", scenario.name), ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_end, steps as f64..0f64)
        .map_err(|x| e(&x))?;
    chart.configure_mesh().disable_y_mesh().y_labels(0).draw().map_err(|x| e(&x))?;
    for (row, step) in scenario.steps.iter().enumerate() {
        let colour = match (step.passed, step_kind(step)) {
            (false, _) => FAILED,
            (true, StepKind::Fault) => RGBColor(230, 120, 40),
            (true, StepKind::Heal) => OK,
            (true, StepKind::Other) => STEP,
        };
        let y = row as f64;
        let x1 = (step.started_s + step.seconds).max(step.started_s + x_end / 400.0);
        chart
            .draw_series(std::iter::once(Rectangle::new([(step.started_s, y + 0.15), (x1, y + 0.85)], colour.filled())))
            .map_err(|x| e(&x))?;
        let mut label: String = format!("{}. {}", step.number, step.label);
        if label.chars().count() > 70 {
            label = label.chars().take(69).collect::<String>() + "…";
        }
        // About 6 px per character over a plot about 880 px wide: a label that would run past the
        // right edge goes left of its span instead.
        let label_s = label.chars().count() as f64 * 6.0 * x_end / 880.0;
        let label_x = if x1 + label_s > x_end { (step.started_s - label_s - x_end / 200.0).max(0.0) } else { x1 + x_end / 200.0 };
        chart
            .draw_series(std::iter::once(Text::new(label, (label_x, y + 0.2), ("sans-serif", 12).into_font().color(&BLACK))))
            .map_err(|x| e(&x))?;
    }

    // Fault steps as vertical marks across the two rate panels.
    let faults: Vec<(f64, StepKind)> =
        scenario.steps.iter().map(|s| (s.started_s, step_kind(s))).filter(|(_, k)| *k != StepKind::Other).collect();

    let is_write = |v: Verb| matches!(v, Verb::Create | Verb::Update | Verb::Delete);
    let api_ok = per_second(timeline.api.iter().filter(|a| is_write(a.verb) && a.ok).map(|a| a.at_s), seconds);
    let api_failed = per_second(timeline.api.iter().filter(|a| is_write(a.verb) && !a.ok).map(|a| a.at_s), seconds);
    let kms_ok = per_second(timeline.kms.iter().filter(|k| k.ok).map(|k| k.at_s), seconds);
    let kms_failed = per_second(timeline.kms.iter().filter(|k| !k.ok).map(|k| k.at_s), seconds);
    rate_panel(&middle, "API writes per second", x_end, &api_ok, &api_failed, &faults)?;
    rate_panel(&lowest, "mock KMS calls per second", x_end, &kms_ok, &kms_failed, &faults)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

fn rate_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_end: f64,
    ok: &[u32],
    failed: &[u32],
    marks: &[(f64, StepKind)],
) -> Result<(), String> {
    let e = |error: &dyn std::fmt::Display| error.to_string();
    let max = ok.iter().zip(failed).map(|(a, b)| a + b).max().unwrap_or(0).max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_end, 0f64..max * 1.1)
        .map_err(|x| e(&x))?;
    chart.configure_mesh().x_desc("s since the scenario began").draw().map_err(|x| e(&x))?;
    // Stacked bars: ok at the bottom, failed on top.
    chart
        .draw_series(
            ok.iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.9, f64::from(*n))], OK.filled())),
        )
        .map_err(|x| e(&x))?
        .label("ok")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], OK.filled()));
    chart
        .draw_series(failed.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| {
            let base = f64::from(ok[i]);
            Rectangle::new([(i as f64 + 0.1, base), (i as f64 + 0.9, base + f64::from(*n))], FAILED.filled())
        }))
        .map_err(|x| e(&x))?
        .label("failed")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], FAILED.filled()));
    chart
        .draw_series(marks.iter().map(|(at, kind)| {
            let colour = if *kind == StepKind::Fault { RGBColor(230, 120, 40) } else { OK };
            PathElement::new(vec![(*at, 0.0), (*at, max * 1.1)], colour.stroke_width(2))
        }))
        .map_err(|x| e(&x))?
        .label("fault / heal step")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], RGBColor(230, 120, 40).stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    Ok(())
}
