"""The HTML report's inline stylesheet and script (the report is one file: no external CSS, JS, fonts or images).

Colour carries one meaning everywhere: green agrees with the article, red contradicts it, grey says nothing either
way (inconclusive, not testable). Amber is reserved for the smoke-preset caveat and is never a verdict.
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
:root{--agree:#1a7f37;--agree-bg:#dafbe1;--contra:#cf222e;--contra-bg:#ffebe9;--neutral:#6e7781;--neutral-bg:#eaeef2;
--fg:#1f2328;--muted:#59636e;--line:#d0d7de;--subtle:#f6f8fa;--link:#0969da;--amber:#9a6700;--amber-bg:#fff8c5;
--amber-line:#d4a72c}
*{box-sizing:border-box}
[hidden]{display:none!important}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:#fff}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
code{font:12.5px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.wrap{max-width:1360px;margin:0 auto;padding:0 24px}
header.top{padding:18px 0 6px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:21px;margin:0;line-height:1.25}
h3{font-size:15px;margin:18px 0 6px}
.lede{margin:2px 0;color:var(--muted)}
.lede b{color:var(--fg)}
.legend{margin:6px 0 0;font-size:13px;color:var(--muted);display:flex;flex-wrap:wrap;gap:4px 14px;align-items:center}
.pill{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12.5px;font-weight:600;white-space:nowrap;
color:#fff;border:1px solid transparent}
.pill.agree{background:var(--agree)}.pill.contradict{background:var(--contra)}.pill.neutral{background:var(--neutral)}
.pill.hollow{background:#fff;color:var(--neutral);border-color:var(--neutral)}
.pill.failed-run{background:#fff;color:var(--fg);border:1px dashed var(--fg)}
.banner{margin:10px 0;padding:9px 14px;border:1px solid var(--amber-line);border-left-width:6px;
background:var(--amber-bg);border-radius:6px;font-size:14px}
.banner strong{color:#4d2d00}
.banner.slim{padding:4px 12px;margin:8px 0 4px;font-size:13.5px}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;font-weight:600;border:1px solid var(--line);
color:var(--muted);background:var(--subtle)}
.tag.smoke{background:var(--amber-bg);border-color:var(--amber-line);color:#4d2d00}
nav.bar{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.96);border-bottom:1px solid var(--line);
padding:7px 0;margin:8px 0 12px}
nav.bar .wrap{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center;font-size:13.5px}
nav.bar label.chip{display:inline-flex;gap:5px;align-items:center;padding:2px 9px 2px 6px;border:1px solid var(--line);
border-radius:999px;cursor:pointer;user-select:none;background:#fff}
nav.bar label.chip .dot{width:10px;height:10px;border-radius:50%}
nav.bar select{font:inherit;padding:2px 4px;max-width:100%}
nav.bar .count{color:var(--muted);margin-left:auto}
.dot.agree{background:var(--agree)}.dot.contradict{background:var(--contra)}.dot.neutral{background:var(--neutral)}
.dot.hollow{background:#fff;border:2px solid var(--neutral)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:14px;margin:6px 0 8px}
.card{border:1px solid var(--line);border-radius:8px;overflow:hidden;display:flex;flex-direction:column;background:#fff}
.card .thumb{display:block;height:104px;background:#fff;border-bottom:1px solid var(--line)}
.card .thumb img{width:100%;height:100%;object-fit:contain;display:block}
.card .thumb.none{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:13px;
background:var(--subtle)}
.card .body{padding:9px 12px 11px;display:flex;flex-direction:column;gap:5px;flex:1}
.card h3{margin:0;font-size:14.5px;line-height:1.3}
.card h3 a{color:var(--fg)}
.card .art{font-size:12.5px;color:var(--muted);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.card .checks{font-size:13px}
.card .checks b.ok{color:var(--agree)}.card .checks b.bad{color:var(--contra)}
.stats{display:grid;grid-template-columns:repeat(4,1fr);gap:4px;margin-top:auto}
.stat{border-top:3px solid;padding-top:2px;font-size:11px;line-height:1.2;color:var(--muted)}
.stat b{display:block;font-size:17px;color:var(--fg);font-variant-numeric:tabular-nums}
.stat.agree{border-color:var(--agree)}.stat.contradict{border-color:var(--contra)}.stat.neutral{border-color:var(--neutral)}
.stat.hollow{border-top-style:dotted;border-color:var(--neutral)}
.stat.zero b{color:#b6bec8}
.card.smoke{border-color:var(--amber-line)}
.card.failed{border-style:dashed;border-color:var(--fg)}
.card .err{font-size:12.5px;color:var(--fg);background:var(--subtle);padding:4px 6px;border-radius:4px;
overflow-wrap:anywhere}
section.exp{border-top:2px solid var(--fg);padding:14px 0 10px;margin-top:22px;scroll-margin-top:52px}
section.exp .meta{font-size:13px;color:var(--muted);margin-top:4px;display:flex;flex-wrap:wrap;gap:2px 12px}
.tally{display:inline-flex;flex-wrap:wrap;gap:4px 10px;margin-left:10px;font-size:13px;font-weight:400;
vertical-align:1px}
.tablewrap{overflow-x:auto}
table.claims{width:100%;border-collapse:collapse;font-size:14px;margin:4px 0}
table.claims th{text-align:left;font-size:12px;font-weight:600;color:var(--muted);text-transform:uppercase;
letter-spacing:.03em;border-bottom:1px solid var(--line);padding:4px 8px}
table.claims td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top}
table.claims tr.claim td:first-child{border-left:4px solid var(--neutral)}
table.claims tr.agree td:first-child{border-left-color:var(--agree)}
table.claims tr.contradict td:first-child{border-left-color:var(--contra)}
table.claims col.c-claim{width:31%}table.claims col.c-verdict{width:8.5em}table.claims col.c-num{width:5em}
table.claims col.c-test{width:7.5em}
.stmt{margin:0}
.cid{font-size:12px;color:var(--muted);margin-top:2px;overflow-wrap:anywhere}
td.ev{font-size:13px;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
td.ev .figlink{white-space:nowrap}
tr.figrow td{padding:4px 8px 12px;border-left:4px solid transparent}
details{margin:8px 0}
details>summary{cursor:pointer;font-weight:600;padding:4px 0}
details>summary small{font-weight:400;color:var(--muted)}
details.checks{border:1px solid var(--line);border-radius:6px;padding:2px 10px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,560px),1fr));gap:14px;margin:12px 0;
align-items:start}
figure.plot{margin:0;cursor:zoom-in;text-align:center}
.figs figure.plot.wide{grid-column:1/-1}
figure.plot img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff}
figure.plot figcaption{font-size:12.5px;color:var(--muted);margin-top:2px}
figure.plot.zoom{position:fixed;inset:0;z-index:20;background:rgba(255,255,255,.98);overflow:auto;padding:16px;
cursor:zoom-out;text-align:left}
figure.plot.zoom img{max-width:none;width:auto}
.missing{color:var(--contra);font-size:13px}
.metrics{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:0 18px;font-size:13px;
flex:1 1 100%}
.kv div{display:flex;justify-content:space-between;gap:8px;border-bottom:1px dotted var(--line);padding:2px 0}
.kv span{color:var(--muted);overflow-wrap:anywhere}
.kv b{font-weight:600;font-variant-numeric:tabular-nums;white-space:nowrap}
table.matrix{border-collapse:collapse;font-size:12.5px}
table.matrix caption{text-align:left;font-weight:600;font-size:12.5px;color:var(--muted);padding-bottom:2px}
table.matrix th,table.matrix td{border:1px solid var(--line);padding:2px 6px;text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}
table.matrix th{background:var(--subtle);font-weight:600}
table.matrix th[scope=row]{text-align:left}
.matrixwrap{overflow-x:auto;max-width:100%}
.note{font-size:13px;color:var(--muted)}
pre{background:var(--subtle);padding:8px 10px;overflow:auto;font-size:12px;border-radius:6px;max-height:420px}
footer{color:var(--muted);font-size:12.5px;border-top:1px solid var(--line);margin-top:26px;padding:10px 0 30px}
@media (max-width:760px){
 body{font-size:14.5px}
 .wrap{padding:0 12px}
 h1{font-size:21px}h2{font-size:18px}
 nav.bar{position:static}
 nav.bar .count{margin-left:0}
 .cards{grid-template-columns:1fr;gap:10px}
 .card .thumb{display:none}
 table.claims,table.claims tbody,table.claims tr,table.claims td{display:block;width:auto}
 table.claims thead,table.claims colgroup{display:none}
 table.claims tr.claim{border-left:4px solid var(--neutral);border-bottom:1px solid var(--line);padding:6px 0 6px 8px}
 table.claims tr.claim.agree{border-left-color:var(--agree)}
 table.claims tr.claim.contradict{border-left-color:var(--contra)}
 table.claims tr.claim td,table.claims tr.claim td:first-child{border:0;padding:2px 0}
 table.claims td.num,table.claims td.test{display:inline-block;margin-right:14px}
 table.claims td[data-label]:not(:first-child)::before{content:attr(data-label) ": ";color:var(--muted);font-size:12px}
 table.claims td.verdict::before{display:none}
 tr.figrow td{padding:4px 0 10px}
}
@media print{nav.bar{display:none}section.exp{break-inside:auto}figure.plot{break-inside:avoid}}
"""

# Progressive enhancement: without JavaScript every claim is shown and the filter bar stays hidden.
JS = """
(function(){
  var bar=document.getElementById('filters');
  if(!bar){return;}
  bar.hidden=false;
  var boxes=Array.prototype.slice.call(bar.querySelectorAll('input[type=checkbox]'));
  var pick=bar.querySelector('select');
  var count=bar.querySelector('.count');
  function apply(){
    var on={};
    boxes.forEach(function(b){on[b.value]=b.checked;});
    var all=boxes.every(function(b){return b.checked;});
    var tech=pick.value, shown=0, total=0;
    document.querySelectorAll('section.exp').forEach(function(sec){
      var mine=!tech||sec.getAttribute('data-exp')===tech, n=0;
      sec.querySelectorAll('tr.claim').forEach(function(tr){
        var ok=mine&&on[tr.getAttribute('data-verdict')]!==false;
        tr.hidden=!ok; total+=1; if(ok){n+=1;}
      });
      sec.querySelectorAll('tr.figrow').forEach(function(fr){
        var ids=(fr.getAttribute('data-for')||'').split(' ');
        fr.hidden=!ids.some(function(id){var r=document.getElementById(id);return r&&!r.hidden;});
      });
      if(!all){
        sec.querySelectorAll('details.checks').forEach(function(d){
          if(d.querySelector('tr.claim:not([hidden])')){d.open=true;}
        });
      }
      sec.hidden=!mine||(!all&&n===0&&!sec.classList.contains('failed'));
      shown+=n;
    });
    document.querySelectorAll('.card[data-exp]').forEach(function(c){
      c.hidden=!!tech&&c.getAttribute('data-exp')!==tech;
    });
    count.textContent=(all&&!tech)?total+' claims and checks':'showing '+shown+' of '+total;
  }
  boxes.forEach(function(b){b.addEventListener('change',apply);});
  pick.addEventListener('change',apply);
  apply();
  document.addEventListener('click',function(e){
    var f=e.target.closest?e.target.closest('figure.plot'):null;
    if(f){f.classList.toggle('zoom');}
  });
  document.addEventListener('keydown',function(e){
    if(e.key==='Escape'){document.querySelectorAll('figure.plot.zoom').forEach(function(f){f.classList.remove('zoom');});}
  });
})();
"""
