//! The graph page: one or more views of a graph (the input, and after each pass of a
//! pipeline), each an SVG with one `<g class="node">` element per graph node (id
//! `v{view}n{node index}`), coloured by op family; hover or click shows the node's op,
//! attributes, operands, shapes, FLOPs and bytes; a search box finds nodes by name; layers
//! (nodes sharing a name prefix) collapse into one box; collectives and send/recv are drawn
//! with a heavy red outline.

use super::graph_layout::{layout, Layout};
use super::page;
use super::svg::{colour, esc, num, svg, Tag};
use oar_ir::graph::types_text;
use oar_ir::op::{op_attrs, op_cost};
use oar_ir::{Graph, Op};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One view of the page: a graph and the tab label that names it.
pub struct GraphView {
    pub label: String,
    pub graph: Graph,
    /// A line under the tabs (what the pass changed).
    pub note: String,
}

/// The CSS class of an op family (`pool/resize` → `fam-pool-resize`).
fn family_class(op: &Op) -> String {
    format!("fam-{}", op.family().replace('/', "-"))
}

/// A name without its last `drops` dotted (or slashed) parts.
fn prefix(name: &str, drops: usize) -> Option<&str> {
    let mut name = name;
    for _ in 0..drops {
        name = &name[..name.rfind(['.', '/'])?];
    }
    (!name.is_empty()).then_some(name)
}

/// The layer each node belongs to, for collapsing: a dotted name's prefix (`blocks.3.conv` →
/// `blocks.3`); a weight's parameter name without its last two parts (`blocks.3.conv.weight`
/// → `blocks.3`). Importers and the DSL often number ops instead of naming them, so an op
/// without a dotted name joins the layer of its first weight, else of its first operand:
/// a conv joins its weights' layer and the activation after it follows.
pub fn groups(g: &Graph) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::with_capacity(g.len());
    for (_, node) in g.iter() {
        let own = if let Op::Param(p) = &node.op {
            prefix(&p.name, 2)
        } else if node.op.is_weight() {
            prefix(&node.name, 2)
        } else {
            prefix(&node.name, 1)
        };
        let gr = own.map(str::to_string).or_else(|| {
            let from = |weights: bool| {
                node.inputs
                    .iter()
                    .filter(|v| g.node(v.node).op.is_weight() == weights)
                    .find_map(|v| out.get(v.node.index()).cloned().flatten())
            };
            if node.op.is_weight() {
                None
            } else {
                from(true).or_else(|| from(false))
            }
        });
        out.push(gr);
    }
    out
}

/// The details the page shows for one node.
fn details(g: &Graph, i: usize, bindings: &BTreeMap<String, u64>) -> Value {
    let node = &g.nodes()[i];
    let ins: Vec<_> = node
        .inputs
        .iter()
        .filter_map(|v| g.value_type(*v).cloned())
        .collect();
    let operands: Vec<String> = node
        .inputs
        .iter()
        .map(|v| {
            let t = g.value_type(*v).map(|t| t.to_string()).unwrap_or_default();
            let port = if v.port == 0 {
                String::new()
            } else {
                format!("#{}", v.port)
            };
            format!("%{}{port}: {t}", g.node(v.node).name)
        })
        .collect();
    let attrs: Vec<String> = op_attrs(&node.op)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let (flops, bytes) = if node.op.is_source() {
        let b: u64 = node.outputs.iter().map(|t| t.bytes(bindings, 1)).sum();
        (0, b)
    } else {
        let c = op_cost(&node.op, &ins, &node.outputs, bindings, 1);
        (c.flops, c.bytes)
    };
    let mut d = json!({
        "name": node.name,
        "op": node.op.name(),
        "family": node.op.family(),
        "attrs": attrs,
        "operands": operands,
        "outputs": types_text(&node.outputs),
        "flops": flops,
        "bytes": bytes,
    });
    if let Some(m) = d.as_object_mut() {
        if let Some(dist) = &node.dist {
            m.insert("stage".into(), json!(dist.stage));
            m.insert("mesh".into(), json!(dist.mesh));
            let pl: Vec<String> = dist
                .outputs
                .iter()
                .map(|ps| {
                    let s: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                    format!("[{}]", s.join(", "))
                })
                .collect();
            m.insert("placements".into(), json!(pl));
        }
        if let Some(dev) = &node.device {
            m.insert("device".into(), json!(dev.to_string()));
        }
        // A fused kernel's body, so it can be expanded on the page.
        if let Op::Fused { func } = &node.op {
            if let Some(body) = g.functions.get(func) {
                let lines: Vec<String> = body
                    .nodes()
                    .iter()
                    .filter(|n| !matches!(n.op, Op::Input))
                    .map(|n| format!("{} : {}", n.op.name(), types_text(&n.outputs)))
                    .collect();
                m.insert("body".into(), json!(lines));
            }
        }
    }
    d
}

/// `s` cut to `max` characters, keeping its end (a weight's distinguishing part).
fn shorten_left(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(n - (max - 1)).collect();
        format!("…{tail}")
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max - 1).collect();
        head + "…"
    }
}

/// One view's SVG and the details of its nodes keyed by element id.
pub fn graph_svg(
    g: &Graph,
    view: usize,
    bindings: &BTreeMap<String, u64>,
) -> (String, Map<String, Value>) {
    let Layout {
        nodes: boxes,
        width,
        height,
    } = layout(g);
    let id = |i: usize| format!("v{view}n{i}");
    let mut s = String::new();
    let mut data = Map::new();
    let groups = groups(g);
    // Group boxes first (underneath), shown when the group is collapsed.
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, gr) in groups.iter().enumerate() {
        if let Some(gr) = gr {
            members.entry(gr.as_str()).or_default().push(i);
        }
    }
    for (name, m) in members.iter().filter(|(_, m)| m.len() > 1) {
        let x0 = m
            .iter()
            .map(|&i| boxes[i].x - boxes[i].w / 2.0)
            .fold(f64::INFINITY, f64::min);
        let x1 = m
            .iter()
            .map(|&i| boxes[i].x + boxes[i].w / 2.0)
            .fold(0.0, f64::max);
        let y0 = m
            .iter()
            .map(|&i| boxes[i].y - boxes[i].h / 2.0)
            .fold(f64::INFINITY, f64::min);
        let y1 = m
            .iter()
            .map(|&i| boxes[i].y + boxes[i].h / 2.0)
            .fold(0.0, f64::max);
        let inner = Tag::new("rect")
            .x("x", x0 - 4.0)
            .x("y", y0 - 4.0)
            .x("width", x1 - x0 + 8.0)
            .x("height", y1 - y0 + 8.0)
            .a("rx", 6)
            .empty()
            + &Tag::new("text")
                .x("x", x0 + 4.0)
                .x("y", y0 + 14.0)
                .text(&format!("{name} ({} nodes) ▸", m.len()));
        s += &Tag::new("g")
            .a("class", "grp-box")
            .a("data-group", name)
            .wrap(&inner);
    }
    for (to, node) in g.iter() {
        let b = &boxes[to.index()];
        for v in &node.inputs {
            let a = &boxes[v.node.index()];
            let (x1, y1, x2, y2) = (a.x, a.y + a.h / 2.0, b.x, b.y - b.h / 2.0);
            let my = (y1 + y2) / 2.0;
            let class = if g.node(v.node).op.is_weight() {
                "edge w"
            } else {
                "edge"
            };
            s += &Tag::new("path")
                .a("class", class)
                .a("data-from", id(v.node.index()))
                .a("data-to", id(to.index()))
                .a(
                    "d",
                    format!(
                        "M{} {}C{} {} {} {} {} {}",
                        num(x1),
                        num(y1),
                        num(x1),
                        num(my),
                        num(x2),
                        num(my),
                        num(x2),
                        num(y2)
                    ),
                )
                .empty();
        }
    }
    for (nid, node) in g.iter() {
        let i = nid.index();
        let b = &boxes[i];
        let mut class = format!("node {}", family_class(&node.op));
        if node.op.is_collective() || matches!(node.op.family(), "p2p") {
            class += " collective";
        }
        if node.op.is_weight() {
            class += " weight";
        }
        let mut inner = Tag::new("rect")
            .x("x", b.x - b.w / 2.0)
            .x("y", b.y - b.h / 2.0)
            .x("width", b.w)
            .x("height", b.h)
            .a("rx", 4)
            .empty();
        let stage = node.dist.as_ref().and_then(|d| d.stage);
        if let Some(st) = stage {
            inner += &Tag::new("rect")
                .a("class", "stage")
                .x("x", b.x - b.w / 2.0)
                .x("y", b.y - b.h / 2.0)
                .x("width", 5.0)
                .x("height", b.h)
                .a("fill", colour(st as usize))
                .empty();
        }
        if node.op.is_weight() {
            let label = if let Op::Param(p) = &node.op {
                p.name.as_str()
            } else {
                node.name.as_str()
            };
            inner += &Tag::new("text")
                .x("x", b.x)
                .x("y", b.y + 4.0)
                .a("text-anchor", "middle")
                .text(&shorten_left(label, 20));
        } else {
            inner += &Tag::new("text")
                .a("class", "nm")
                .x("x", b.x)
                .x("y", b.y - 3.0)
                .a("text-anchor", "middle")
                .text(&shorten(&format!("{} {}", node.op.name(), node.name), 24));
            inner += &Tag::new("text")
                .a("class", "ty")
                .x("x", b.x)
                .x("y", b.y + 11.0)
                .a("text-anchor", "middle")
                .text(&shorten(&types_text(&node.outputs), 26));
        }
        let mut tag = Tag::new("g")
            .a("class", class)
            .a("id", id(i))
            .a("data-name", &node.name)
            .a("data-op", node.op.name());
        if let Some(gr) = groups[i]
            .as_ref()
            .filter(|gr| members.get(gr.as_str()).is_some_and(|m| m.len() > 1))
        {
            tag = tag.a("data-group", gr);
        }
        if let Some(st) = stage {
            tag = tag.a("data-stage", st);
        }
        if let Op::Param(p) = &node.op {
            tag = tag.a("data-param", &p.name);
        }
        s += &tag.wrap(&inner);
        data.insert(id(i), details(g, i, bindings));
    }
    (svg("graph", width, height, &s), data)
}

const GRAPH_CSS: &str = r#"
#wrap{display:flex;align-items:flex-start}#canvas{flex:1;overflow:auto;max-height:calc(100vh - 150px);border:1px solid #ddd;background:#fff}
#info{width:340px;margin-left:12px;position:sticky;top:8px;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 10px;font-size:12px;max-height:calc(100vh - 150px);overflow:auto}
#info pre{white-space:pre-wrap;margin:2px 0}#tools{margin:8px 0}#tools input[type=search]{width:260px;padding:3px}
.tab{border:1px solid #aaa;background:#eee;padding:3px 10px;cursor:pointer;margin:0 4px 4px 0;border-radius:4px}.tab.on{background:#1d3557;color:#fff}
.view{display:none}.view.on{display:block}
svg .node rect{stroke:#555;stroke-width:1}svg .node text{font-size:10px;pointer-events:none}svg .node .ty{fill:#555;font-size:9px}
svg .node{cursor:pointer}svg .node:hover rect{stroke:#000;stroke-width:2}
svg .node.sel rect{stroke:#000;stroke-width:3}svg .node.match rect{stroke:#e63946;stroke-width:3}svg.searching .node:not(.match){opacity:.25}
svg .node.collective rect{stroke:#d00;stroke-width:3}svg .edge{fill:none;stroke:#888;stroke-width:1}svg .edge.w{stroke:#ccc;stroke-dasharray:3 2}
svg .fam-source rect{fill:#cfe3f5}svg .weight rect{fill:#e9e9e9}svg .fam-elementwise rect{fill:#fff3c4}svg .fam-contraction rect{fill:#f7c59f}
svg .fam-normalization rect{fill:#c8e6c9}svg .fam-reduction rect{fill:#e1bee7}svg .fam-pool-resize rect{fill:#b2ebf2}svg .fam-shape rect{fill:#f5f5f5}
svg .fam-gather rect{fill:#d7ccc8}svg .fam-collective rect{fill:#ffcdd2}svg .fam-p2p rect{fill:#ffe0b2}svg .fam-fused rect{fill:#ffab91}svg .fam-gradient rect{fill:#dcedc8}
svg .node rect.stage{stroke:none}svg .grp-box{display:none}svg .grp-box rect{fill:#eef3fb;stroke:#1d3557;stroke-width:2}svg .grp-box{cursor:pointer}
svg .grp-box.shown{display:inline}svg .hidden{display:none}
.legend span{display:inline-block;padding:1px 6px;margin:2px;border:1px solid #999;border-radius:3px;font-size:12px}
#groups{max-height:200px;overflow:auto;font-size:12px}
"#;

const GRAPH_JS: &str = r#"
(function(){
  var data=JSON.parse(document.getElementById('graph-data').textContent);
  var info=document.getElementById('info-body');var pinned=null;
  function show(id){
    var d=data[id];if(!d)return;
    var h='<b>'+esc(d.op)+'</b> %'+esc(d.name)+' <i>('+esc(d.family)+')</i>';
    h+='<br>outputs: '+esc(d.outputs)+'<br>FLOPs: '+d.flops.toLocaleString()+'<br>bytes: '+d.bytes.toLocaleString();
    if(d.attrs.length)h+='<br>attributes:<pre>'+esc(d.attrs.join('\n'))+'</pre>';
    if(d.operands.length)h+='operands:<pre>'+esc(d.operands.join('\n'))+'</pre>';
    if(d.stage!==undefined&&d.stage!==null)h+='pipeline stage '+d.stage+'<br>';
    if(d.mesh)h+='mesh @'+esc(d.mesh)+' '+esc((d.placements||[]).join(' '))+'<br>';
    if(d.device)h+='device '+esc(d.device)+'<br>';
    if(d.body)h+='<details open><summary>fused body ('+d.body.length+' ops)</summary><pre>'+esc(d.body.join('\n'))+'</pre></details>';
    info.innerHTML=h;
  }
  function esc(s){return String(s).replace(/[&<>"]/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c];});}
  document.querySelectorAll('svg.graph .node').forEach(function(n){
    n.addEventListener('mouseenter',function(){if(!pinned)show(n.id);});
    n.addEventListener('click',function(){
      if(pinned)pinned.classList.remove('sel');
      pinned=(pinned===n)?null:n;if(pinned){pinned.classList.add('sel');show(n.id);}
    });
  });
  document.querySelectorAll('.tab').forEach(function(t){
    t.addEventListener('click',function(){
      document.querySelectorAll('.tab,.view').forEach(function(e){e.classList.remove('on');});
      t.classList.add('on');document.getElementById(t.dataset.view).classList.add('on');
    });
  });
  var q=document.getElementById('search');
  q.addEventListener('input',function(){
    var s=q.value.trim().toLowerCase();var first=null;var count=0;
    document.querySelectorAll('svg.graph').forEach(function(g){g.classList.toggle('searching',s.length>0);});
    document.querySelectorAll('svg.graph .node').forEach(function(n){
      var key=(n.dataset.name+' '+n.dataset.op+' '+(n.dataset.param||'')).toLowerCase();var m=s.length>0&&key.indexOf(s)>=0;
      n.classList.toggle('match',m);if(m){count++;if(!first&&n.closest('.view.on'))first=n;}
    });
    document.getElementById('found').textContent=s?count+' found':'';
    if(first)first.scrollIntoView({block:'center',inline:'center'});
  });
  function collapse(name,on){
    document.querySelectorAll('svg.graph').forEach(function(g){
      var ids={};
      g.querySelectorAll('.node').forEach(function(n){if(n.dataset.group===name){n.classList.toggle('hidden',on);ids[n.id]=1;}});
      g.querySelectorAll('.edge').forEach(function(e){if(ids[e.dataset.from]&&ids[e.dataset.to])e.classList.toggle('hidden',on);});
      g.querySelectorAll('.grp-box').forEach(function(b){if(b.dataset.group===name)b.classList.toggle('shown',on);});
    });
    document.querySelectorAll('#groups input').forEach(function(c){if(c.value===name)c.checked=on;});
  }
  document.querySelectorAll('#groups input').forEach(function(c){c.addEventListener('change',function(){collapse(c.value,c.checked);});});
  document.querySelectorAll('svg .grp-box').forEach(function(b){b.addEventListener('click',function(){collapse(b.dataset.group,false);});});
  document.getElementById('collapse-all').addEventListener('click',function(){document.querySelectorAll('#groups input').forEach(function(c){collapse(c.value,true);});});
  document.getElementById('expand-all').addEventListener('click',function(){document.querySelectorAll('#groups input').forEach(function(c){collapse(c.value,false);});});
})();
"#;

/// The graph page: tabs over `views` (the first shown), a family legend, search, the layer
/// list with collapse switches, and the details panel.
pub fn graph_page(title: &str, views: &[GraphView], bindings: &BTreeMap<String, u64>) -> String {
    let mut tabs = String::new();
    let mut panes = String::new();
    let mut data = Map::new();
    let mut families: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut collectives = 0usize;
    for (k, v) in views.iter().enumerate() {
        let on = if k == 0 { " on" } else { "" };
        tabs += &format!(
            "<button class=\"tab{on}\" data-view=\"view{k}\">{} ({} nodes)</button>",
            esc(&v.label),
            v.graph.len()
        );
        let (svg, d) = graph_svg(&v.graph, k, bindings);
        data.extend(d);
        panes += &format!(
            "<div class=\"view{on}\" id=\"view{k}\"><p class=\"note\">{}</p>{svg}</div>",
            esc(&v.note)
        );
        if k == 0 {
            for n in v.graph.nodes() {
                *families.entry(n.op.family()).or_insert(0) += 1;
                collectives += usize::from(n.op.is_collective() || n.op.family() == "p2p");
            }
            for gr in self::groups(&v.graph).into_iter().flatten() {
                *groups.entry(gr).or_insert(0) += 1;
            }
        }
    }
    let legend: String = families
        .iter()
        .filter(|(_, &c)| c > 0)
        .map(|(f, c)| {
            format!(
                "<span class=\"fam\"><svg width=\"10\" height=\"10\"><g class=\"fam-{}\"><rect width=\"10\" height=\"10\"/></g></svg> {} {c}</span>",
                f.replace('/', "-"),
                esc(f)
            )
        })
        .collect();
    let group_list: String = groups
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(g, c)| {
            format!(
                "<label><input type=\"checkbox\" value=\"{}\"> {} ({c})</label><br>",
                esc(g),
                esc(g)
            )
        })
        .collect();
    let json = serde_json::to_string(&Value::Object(data))
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    let body = format!(
        "<header><h1>{}</h1><p>{} view{} · {} nodes{}</p></header><main>\
<div id=\"tools\">{tabs}<br><input type=\"search\" id=\"search\" placeholder=\"search by name, op or parameter\"> <span id=\"found\"></span> \
<button id=\"collapse-all\">collapse all layers</button> <button id=\"expand-all\">expand all</button></div>\
<div class=\"legend\">{legend}</div>\
<div id=\"wrap\"><div id=\"canvas\">{panes}</div><aside id=\"info\"><div id=\"info-body\">Hover a node for its op, attributes, shapes, FLOPs and bytes; click to pin.</div>\
<details><summary>layers ({} groups by name prefix): tick to collapse</summary><div id=\"groups\">{group_list}</div></details></aside></div></main>\
<script type=\"application/json\" id=\"graph-data\">{json}</script>",
        esc(title),
        views.len(),
        if views.len() == 1 { "" } else { "s" },
        views.first().map(|v| v.graph.len()).unwrap_or(0),
        if collectives > 0 {
            format!(" · {collectives} collectives and send/recv (red outline)")
        } else {
            String::new()
        },
        groups.values().filter(|&&c| c > 1).count(),
    );
    page(title, GRAPH_CSS, &body, GRAPH_JS)
}
