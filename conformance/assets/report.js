(function () {
  'use strict';
  var t0 = performance.now();
  var OUTCOMES = ['passed', 'failed', 'divergence', 'unsupported', 'xpass', 'skipped', 'error'];
  var SEVERITY = {error: 6, failed: 5, xpass: 4, refused: 3, unsupported: 3, divergence: 2, skipped: 1, passed: 0};
  var data = JSON.parse(document.getElementById('conformance-data').textContent);
  var cases = data.cases || [], baseline = data.baseline, flags = data.flags || {};
  var main = document.getElementById('families'), tip = document.getElementById('tip');
  var q = document.getElementById('q'), sortSel = document.getElementById('sort');
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input[name=outcome]'));
  var DIRS = [], fams = [], famBy = {}, variantBy = {}, lastHash = null;

  function esc(s) {
    return String(s === null || s === undefined ? '' : s).replace(/[&<>"']/g, function (ch) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[ch];
    });
  }
  function isNum(x) { return typeof x === 'number' && isFinite(x); }
  function fmt(x) {
    if (x === null || x === undefined) return '—';
    if (!isNum(x)) return x === 'inf' ? '∞' : esc(x);
    if (x === 0) return '0';
    var a = Math.abs(x);
    return (a < 1e-3 || a >= 1e4) ? x.toExponential(2) : String(Number(x.toPrecision(3)));
  }
  function shade(h) {
    if (!isNum(h) || h < 1e-4) return 'h0';
    return h < 1e-3 ? 'h1' : h < 1e-2 ? 'h2' : h < 0.1 ? 'h3' : h < 0.5 ? 'h4' : 'h5';
  }
  function variantOf(id) {
    var i = id.indexOf('['), j = id.lastIndexOf(']');
    return i >= 0 && j > i ? id.slice(i + 1, j) : id;
  }
  function firstLine(s) { return String(s || '').split('\n')[0]; }
  function key(c) { return c.id + '|' + c.direction; }
  function worst(list) {
    return list.reduce(function (w, c) { return SEVERITY[c.outcome] > SEVERITY[w] ? c.outcome : w; }, 'passed');
  }

  cases.forEach(function (c, i) {
    c._i = i;
    if (DIRS.indexOf(c.direction) < 0) DIRS.push(c.direction);
    if (typeof c.family !== 'string' || !c.family) c.family = '(no family)';
    var f = famBy[c.family];
    if (!f) {
      f = famBy[c.family] = {name: c.family, variants: [], counts: {}, maxH: null, open: false, rendered: false};
      fams.push(f);
    }
    var v = variantBy[c.id];
    if (!v) {
      v = variantBy[c.id] = {id: c.id, label: variantOf(c.id), fam: f, by: {}, list: [], m: true};
      f.variants.push(v);
    }
    v.by[c.direction] = c; v.list.push(c); c._v = v;
    f.counts[c.outcome] = (f.counts[c.outcome] || 0) + 1;
    if (isNum(c.headroom) && (f.maxH === null || c.headroom > f.maxH)) f.maxH = c.headroom;
  });
  fams.forEach(function (f, i) {
    f.order = i;
    f.bad = (f.counts.failed || 0) + (f.counts.error || 0) + (f.counts.xpass || 0);
    f.variants.forEach(function (v, j) {
      v.order = j;
      v.text = [v.id, f.name, JSON.stringify(v.list[0].params)].concat(v.list.map(function (c) {
        return c.outcome + ' ' + (c.message || '') + ' ' + (c.divergence ? c.divergence.reason : '');
      })).join(' ').toLowerCase();
      v.worst = worst(v.list);
      v.maxH = Math.max.apply(null, v.list.map(function (c) { return isNum(c.headroom) ? c.headroom : -1; }));
    });
  });
  fams.sort(function (a, b) { return (b.bad > 0) - (a.bad > 0) || a.order - b.order; });

  function cellHtml(v, dir) {
    var c = v.by[dir];
    if (!c) return '<i class="c none"></i>';
    var cls = 'c o-' + c.outcome + (c.outcome === 'passed' ? ' ' + shade(c.headroom) : '') +
      (flags[key(c)] ? ' flag' : '') + (c.mode === 'train' ? ' tr' : '');
    return '<i class="' + cls + '" data-i="' + c._i + '"></i>';
  }
  function famHtml(f) {
    var chips = OUTCOMES.filter(function (o) { return f.counts[o]; }).map(function (o) {
      return '<span class="chip o-' + o + '"><b>' + f.counts[o] + '</b> ' + o + '</span>';
    }).join('');
    var strip = f.variants.map(function (v) {
      return '<span class="v">' + DIRS.map(function (d) { return cellHtml(v, d); }).join('') + '</span>';
    }).join('');
    var head = '<th>variant</th>' + DIRS.map(function (d) { return '<th>' + esc(d) + '</th>'; }).join('') +
      '<th>max abs error</th><th>message</th>';
    return '<section class="fam' + (f.bad ? ' bad' : '') + '" data-family="' + esc(f.name) + '">' +
      '<div class="fam-head"><button type="button" class="tog" aria-expanded="false" aria-label="expand">▶</button>' +
      '<span class="fname">' + esc(f.name) + '</span>' + chips +
      '<span class="fmax">' + f.variants.length + ' variants · max headroom ' + fmt(f.maxH) + '</span>' +
      '<span class="fshown"></span></div><div class="cells">' + strip + '</div>' +
      '<table class="rows" hidden><thead><tr>' + head + '</tr></thead><tbody></tbody></table></section>';
  }

  function hr(c) {
    if (!isNum(c.headroom)) return '';
    var h = c.headroom, w = h <= 0 ? 0 : Math.max(2, Math.min(100, (Math.log10(h) + 6) / 6 * 100));
    var cls = h > 1 ? 'over' : h >= 0.1 ? 'hot' : '';
    return '<span class="hr" title="headroom: observed / allowed error (log scale, 1e-6 to 1)">' +
      '<span class="hb"><span class="' + cls + '" style="width:' + w.toFixed(1) + '%"></span></span>' + fmt(h) + '</span>';
  }
  function badge(c) { return '<span class="badge o-' + esc(c.outcome) + '">' + esc(c.outcome) + '</span>'; }
  function rowHtml(v) {
    var abs = null, msg = '';
    v.list.forEach(function (c) {
      if (isNum(c.max_abs_error) && (abs === null || c.max_abs_error > abs)) abs = c.max_abs_error;
      if (!msg && c.message) msg = firstLine(c.message);
    });
    return '<tr class="row" data-id="' + esc(v.id) + '"><td class="vid" title="' + esc(v.id) + '">' + esc(v.label) +
      '</td>' + DIRS.map(function (d) {
        var c = v.by[d];
        return '<td>' + (c ? badge(c) + hr(c) : '—') + '</td>';
      }).join('') + '<td class="num">' + fmt(abs) + '</td><td class="msg" title="' + esc(msg) + '">' +
      esc(msg) + '</td></tr>';
  }

  function whoMoved(r) {
    var t = r.torch, k = r.keras;
    if (!isNum(t) || !isNum(k)) return 'a framework output has a different shape or non-finite values';
    if (Math.max(t, k) < 1e-4) return 'both agree with the reference';
    if (k > 10 * t) return 'keras differs from the reference';
    if (t > 10 * k) return 'torch differs from the reference';
    return 'both differ from the reference';
  }
  function kv(pairs) {
    return '<dl class="kv">' + pairs.filter(function (p) { return p; }).map(function (p) {
      return '<dt>' + p[0] + '</dt><dd>' + p[1] + '</dd>';
    }).join('') + '</dl>';
  }
  function shape(s) { return s ? '(' + s.join(', ') + ')' : ''; }
  function dirHtml(c) {
    var out = '<div class="dircol"><h4>' + esc(c.direction) + ' ' + badge(c) + hr(c) + '</h4>';
    if (c.message) out += '<pre class="msg">' + esc(c.message) + '</pre>';
    if (c.divergence) {
      var link = /^https?:\/\//.test(c.divergence.link || '') ?
        ' <a href="' + esc(c.divergence.link) + '" rel="noopener noreferrer" target="_blank">evidence</a>' : '';
      out += '<div class="sub">recorded ' + esc(c.divergence.kind || 'divergence') + '</div><div>' +
        esc(c.divergence.reason) + link + '</div>' +
        (c.divergence.scope ? '<div class="meta">scope: ' + esc(c.divergence.scope) + '</div>' : '');
    }
    var t = c.tolerance, r = c.reference_error, w = c.worst, b = baseline && baseline[key(c)];
    out += '<div class="sub">errors</div>' + kv([
      ['max abs error', fmt(c.max_abs_error)], ['max rel error', fmt(c.max_rel_error)],
      ['allowed error', fmt(c.allowed_error) + ' <span class="meta">at the worst element</span>'],
      ['headroom', fmt(c.headroom) + ' <span class="meta">observed / allowed; above 1 fails</span>'],
      t && t.atol === undefined ? ['tolerance', esc(t.reason)] : null,   // a training scenario's, in words
      t && t.atol !== undefined ? ['tolerance', 'atol ' + fmt(t.atol) + ', rtol ' + fmt(t.rtol) + (t.reason ?
        ' <span class="meta">(' + esc(t.reason) + ')</span>' : '')] : null,
      r ? ['float64 reference', 'torch ' + fmt(r.torch) + ', keras ' + fmt(r.keras) + ' → ' + esc(whoMoved(r))] : null,
      w ? ['worst element', (w.tensor ? 'in ' + esc(w.tensor) : 'index (' + esc((w.index || []).join(', ')) + ')') +
        ': torch ' + esc(w.torch) + ', keras ' + esc(w.keras)] : null,
      baseline ? ['baseline', b ? esc(b[0]) + ', headroom ' + fmt(b[1]) : 'absent'] : null,
      flags[key(c)] ? ['regression', '<b class="warn">' + esc(flags[key(c)].replace(/_/g, ' ')) + '</b>'] : null
    ]);
    var g = c.training;
    if (g) {
      out += '<div class="sub">training mode (' + esc(g.judged || '') + ')</div>';
      if (g.compared) {
        out += '<table class="map"><tr><th>compared</th><th>max abs error</th><th>headroom</th></tr>' +
          g.compared.map(function (x) {
            return '<tr><td class="mono">' + esc(x.name) + '</td><td>' + fmt(x.max_abs_error) + '</td><td>' +
              fmt(x.headroom) + (x.name === g.worst ? ' <b>worst</b>' : '') + '</td></tr>';
          }).join('') + '</table>';
      } else {
        out += '<pre class="msg">' + esc(JSON.stringify(g, null, 1)) + '</pre>';
      }
    }
    if (c.mapping && c.mapping.length) {
      out += '<div class="sub">layout rules applied</div><table class="map"><tr><th>source</th><th>shape</th>' +
        '<th>rule</th><th>destination</th><th>shape</th></tr>' + c.mapping.map(function (m) {
          return '<tr><td class="mono">' + esc(m.source) + '</td><td>' + esc(shape(m.source_shape)) +
            '</td><td class="rule mono">' + esc(m.rule) + '</td><td class="mono">' + esc(m.destination) +
            '</td><td>' + esc(shape(m.destination_shape)) + '</td></tr>';
        }).join('') + '</table>';
    } else {
      out += '<div class="sub">layout rules applied</div><div class="meta">none (no weights)</div>';
    }
    var tm = c.timings || {};
    out += '<div class="sub">timings</div><div class="meta">' + Object.keys(tm).map(function (k) {
      return esc(k) + ' ' + (isNum(tm[k]) ? (tm[k] * 1000).toFixed(1) + ' ms' : esc(tm[k]));
    }).join(' · ') + '</div>';
    out += '<div class="sub">reproduce</div><pre class="repro">conformance run --select "' + esc(c.id) + '"\n' +
      'pytest "' + esc(c.file) + '::' + esc(c.id) + '::' + esc(c.direction) + '"</pre>';
    return out + '</div>';
  }
  function detailHtml(v) {
    var c0 = v.list[0], params = c0.params || {};
    var rows = Object.keys(params).map(function (k) {
      return '<tr><td class="meta">' + esc(k) + '</td><td class="mono">' + esc(JSON.stringify(params[k])) + '</td></tr>';
    }).join('');
    return '<td colspan="' + (DIRS.length + 3) + '"><div class="det-top"><b class="mono">' + esc(v.id) + '</b>' +
      '<span class="meta">family ' + esc(v.fam.name) + ' · ' + esc(c0.file) + ' · seed ' + esc(c0.seed) +
      ' · tier ' + esc(c0.tier) + '</span></div><div class="sub">params</div><table class="params">' + rows +
      '</table><div class="dirs">' + DIRS.filter(function (d) { return v.by[d]; }).map(function (d) {
        return dirHtml(v.by[d]);
      }).join('') + '</div></td>';
  }

  function sorted(f) {
    var list = f.variants.slice(), how = sortSel.value;
    if (how === 'headroom') list.sort(function (a, b) { return b.maxH - a.maxH || a.order - b.order; });
    if (how === 'outcome') list.sort(function (a, b) {
      return SEVERITY[b.worst] - SEVERITY[a.worst] || b.maxH - a.maxH || a.order - b.order;
    });
    return list;
  }
  function renderRows(f) {
    var list = sorted(f), body = f.el.querySelector('tbody');
    body.innerHTML = list.map(rowHtml).join('');
    var rows = body.querySelectorAll('tr.row');
    list.forEach(function (v, i) { v.row = rows[i]; v.row._v = v; v.detail = null; v.row.hidden = !v.m; });
    f.rendered = true;
  }
  function setOpen(f, open) {
    f.open = open;
    f.el.classList.toggle('open', open);
    f.el.querySelector('.tog').setAttribute('aria-expanded', String(open));
    f.el.querySelector('table.rows').hidden = !open;
    if (open && !f.rendered) renderRows(f);
  }
  function toggleDetail(v, show) {
    if (!v.row) return;
    if (show === undefined) show = !v.detail || v.detail.hidden;
    if (show && !v.detail) {
      v.detail = document.createElement('tr');
      v.detail.className = 'detail';
      v.detail.innerHTML = detailHtml(v);
      v.row.parentNode.insertBefore(v.detail, v.row.nextSibling);
    }
    if (v.detail) v.detail.hidden = !show || v.row.hidden;
    v.row.classList.toggle('sel', show);
  }

  function state() {
    return {terms: q.value.toLowerCase().split(/\s+/).filter(Boolean),
            outs: boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; })};
  }
  function apply() {
    var s = state(), active = s.terms.length > 0 || s.outs.length < OUTCOMES.length, shown = 0;
    fams.forEach(function (f) {
      var n = 0, total = 0;
      f.variants.forEach(function (v) {
        var text = s.terms.every(function (t) { return v.text.indexOf(t) >= 0; });
        v.m = false;
        v.list.forEach(function (c) {
          c._m = text && s.outs.indexOf(c.outcome) >= 0;
          if (c._m) { v.m = true; n++; }
          total++;
          if (c._cell) c._cell.classList.toggle('dim', !c._m);
        });
        if (v.row) { v.row.hidden = !v.m; if (v.detail) v.detail.hidden = !v.m || !v.row.classList.contains('sel'); }
      });
      shown += n;
      f.el.hidden = active && n === 0;
      f.el.querySelector('.fshown').textContent = active ? n + ' of ' + total + ' shown' : '';
      if (active && n > 0 && !f.open) setOpen(f, true);
    });
    document.getElementById('status').textContent = active ? shown + ' of ' + cases.length + ' case results shown' :
      cases.length + ' case results';
    writeHash(s);
  }
  function writeHash(s) {
    var p = [];
    if (s.terms.length) p.push('q=' + encodeURIComponent(q.value.trim()));
    if (s.outs.length < OUTCOMES.length) p.push('outcome=' + s.outs.join(','));
    var h = p.length ? '#' + p.join('&') : '';
    if (h === location.hash || (!h && !location.hash)) return;
    lastHash = h;
    try { history.replaceState(null, '', h || location.pathname + location.search); } catch (e) { lastHash = null; }
  }
  function readHash() {
    var raw = location.hash.length > 1 ? location.hash.slice(1) : location.search.slice(1);
    var p = new URLSearchParams(raw);
    q.value = p.get('q') || '';
    var outs = p.getAll('outcome').join(',').split(',').filter(Boolean);
    boxes.forEach(function (b) { b.checked = !outs.length || outs.indexOf(b.value) >= 0; });
    apply();
    if (p.get('case')) openCase(p.get('case'), p.get('dir'));
  }
  function openCase(id, dir) {
    var v = variantBy[id];
    if (!v) return;
    if (!v.m) { q.value = ''; boxes.forEach(function (b) { b.checked = true; }); apply(); }
    setOpen(v.fam, true);
    toggleDetail(v, true);
    v.row.classList.remove('flash'); void v.row.offsetWidth; v.row.classList.add('flash');
    v.row.scrollIntoView({block: 'center'});
  }

  if (!cases.length) main.innerHTML = '<p class="empty">No case results in this file.</p>';
  else main.innerHTML = fams.map(famHtml).join('');
  var sections = main.querySelectorAll('section.fam');
  fams.forEach(function (f, i) { f.el = sections[i]; });
  Array.prototype.forEach.call(main.querySelectorAll('i.c[data-i]'), function (el) { cases[+el.dataset.i]._cell = el; });
  fams.forEach(function (f) { if (f.bad) setOpen(f, true); });

  main.addEventListener('click', function (ev) {
    var t = ev.target;
    if (t.closest('a')) return;
    var cell = t.closest('.v');
    if (cell) {
      var ci = cell.querySelector('[data-i]');
      if (ci) openCase(cases[+ci.dataset.i].id);
      return;
    }
    var head = t.closest('.fam-head');
    if (head) { var f = famBy[head.parentNode.dataset.family]; setOpen(f, !f.open); return; }
    var row = t.closest('tr.row');
    if (row && row._v) toggleDetail(row._v);
  });
  main.addEventListener('mouseover', function (ev) {
    var el = ev.target.closest && ev.target.closest('i.c[data-i]');
    if (!el) { tip.hidden = true; return; }
    var c = cases[+el.dataset.i], b = baseline && baseline[key(c)];
    tip.innerHTML = '<b>' + esc(c.id) + '</b><br>' + esc(c.direction) + ' · ' + esc(c.outcome) +
      (isNum(c.headroom) ? ' · headroom ' + fmt(c.headroom) + ' · max abs error ' + fmt(c.max_abs_error) : '') +
      (b ? '<br><span class="m">baseline: ' + esc(b[0]) + ', headroom ' + fmt(b[1]) + '</span>' : '') +
      (flags[key(c)] ? '<br>regression: ' + esc(flags[key(c)].replace(/_/g, ' ')) : '') +
      (c.message ? '<br><span class="m">' + esc(firstLine(c.message).slice(0, 200)) + '</span>' : '');
    tip.hidden = false;
  });
  main.addEventListener('mousemove', function (ev) {
    if (tip.hidden) return;
    var x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    var y = ev.clientY + 16 + tip.offsetHeight > window.innerHeight ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 16;
    tip.style.left = Math.max(4, x) + 'px'; tip.style.top = Math.max(4, y) + 'px';
  });
  main.addEventListener('mouseleave', function () { tip.hidden = true; });
  var timer = null;
  q.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(apply, 120); });
  boxes.forEach(function (b) { b.addEventListener('change', apply); });
  sortSel.addEventListener('change', function () { fams.forEach(function (f) { if (f.rendered) renderRows(f); }); });
  document.getElementById('expand').addEventListener('click', function () {
    fams.forEach(function (f) { if (!f.el.hidden) setOpen(f, true); });
  });
  document.getElementById('collapse').addEventListener('click', function () {
    fams.forEach(function (f) { setOpen(f, false); });
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.key === '/' && document.activeElement !== q) { ev.preventDefault(); q.focus(); }
  });
  function stickyOffset() {
    document.documentElement.style.setProperty('--ctl', document.getElementById('controls').offsetHeight + 'px');
  }
  window.addEventListener('resize', stickyOffset);
  stickyOffset();
  window.addEventListener('hashchange', function () { if (location.hash !== lastHash) readHash(); });
  readHash();
  main.setAttribute('data-render-ms', String(Math.round(performance.now() - t0)));
})();
