//! HTML reports people share as one file: the auto-parallel plan page (`oar plan --format
//! html`) and the graph page (`oar inspect --format html`). Each page is self-contained —
//! inline CSS, inline SVG drawn by [`svg`], a little inline JavaScript for sorting, hovering
//! and searching — and loads nothing from the network. Output is deterministic for a given
//! input (no clocks, no hash-map order), so SVG snapshots are stable.

pub mod graph_layout;
pub mod graph_page;
pub mod heterps;
pub mod plan_page;
pub mod schedule;
pub mod svg;

pub use graph_page::{graph_page, graph_svg, GraphView};
pub use heterps::heterps_page;
pub use plan_page::plan_page;
pub use schedule::{simulate, Pass, ScheduleError, Slot, StageTimes, Timeline};

/// Styles shared by both pages.
const CSS: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1d3557;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85}
main{padding:8px 20px 40px}section{background:#fff;border:1px solid #ddd;border-radius:6px;margin:14px 0;padding:10px 14px;overflow-x:auto}
h2{font-size:16px;margin:4px 0 8px}.note{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:13px}th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f3f3f3;user-select:none}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.nofit td{color:#a33}
.kpi{display:inline-block;margin:4px 18px 4px 0}.kpi b{display:block;font-size:18px}
svg text{font-size:11px;fill:#222}svg .grid{stroke:#e5e5e5}svg .curve{fill:none;stroke:#0072b2;stroke-width:2}
svg .pt{fill:#0072b2}svg .nofit{fill:#c00;font-size:16px}svg .limit{stroke:#222;stroke-width:2;stroke-dasharray:4 2}
svg .limit.over{stroke:#c00}svg .idle{fill:#f1e4e4}svg .mb.f{fill:#4c8fd6}svg .mb.b{fill:#3aa17e}
svg .mb.f.c1{fill:#2a5f9e}svg .mb.b.c1{fill:#23704f}svg .mb.f.c2,svg .mb.f.c3{fill:#173f6e}svg .mb.b.c2,svg .mb.b.c3{fill:#134732}
svg .mbl{fill:#fff;font-size:9px;pointer-events:none}svg .mb:hover{stroke:#000;stroke-width:1.5}
svg .dev{stroke:#fff;stroke-width:1}svg .dev.idle-dev{fill:#ddd}svg .dev.hl{stroke:#000;stroke-width:2.5}svg .nodebox{fill:#f6f6f6;stroke:#999}
"#;

/// Records on `<html data-load-ms>` how long the page took from navigation to its load
/// event, so a headless browser's `--dump-dom` shows it (the tests and docs/reports.md read it).
const LOAD_JS: &str = "window.addEventListener('load',function(){document.documentElement.setAttribute('data-load-ms',Math.round(performance.now()));});";

/// A complete HTML document.
pub(crate) fn page(title: &str, css: &str, body: &str, script: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}{css}</style></head>\n<body>\n{body}\n<script>\n{script}\n{LOAD_JS}\n</script>\n</body></html>\n",
        svg::esc(title)
    )
}

/// Sorts any `table.sortable` by the clicked column: numerically by each cell's `data-v`
/// when present, else by text.
pub(crate) const SORT_JS: &str = r#"
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[col],y=b.cells[col];
        var xv=x.dataset.v,yv=y.dataset.v;
        var r=(xv!==undefined&&yv!==undefined)?(parseFloat(xv)-parseFloat(yv)):x.textContent.localeCompare(y.textContent);
        return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"#;
