// Building the page from API data. Every value reaches the page as text (textContent or a Text
// node), never as HTML: symbols, messages and log lines are untrusted.

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'value') node.value = String(value);
    else if (key === 'checked') node.checked = Boolean(value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

export function fill(container, ...children) {
  container.replaceChildren();
  append(container, children);
  return container;
}

// A table: columns are [{label, value: row => text | Node, class?}].
export function table(columns, rows, { empty = 'nothing to show', rowClass } = {}) {
  const head = el('tr', {}, columns.map((c) => el('th', { class: c.class, text: c.label })));
  const body = rows.length
    ? rows.map((row) => el('tr', { class: rowClass ? rowClass(row) : null },
      columns.map((c) => el('td', { class: c.class, 'data-label': c.label }, c.value(row) ?? ''))))
    : [el('tr', {}, el('td', { class: 'empty', colspan: columns.length, text: empty }))];
  return el('div', { class: 'table-wrap' }, el('table', {}, el('thead', {}, head), el('tbody', {}, body)));
}

export function card(title, ...children) {
  return el('section', { class: 'card' }, el('h2', { text: title }), ...children);
}

export function field(label, input) {
  return el('label', { class: 'field' }, el('span', { text: label }), input);
}

export function select(name, options, value) {
  return el('select', { name }, options.map((o) => {
    const [optionValue, text] = Array.isArray(o) ? o : [o, o];
    return el('option', { value: optionValue, text, selected: optionValue === value });
  }));
}

export function badge(text, kind) {
  return el('span', { class: `badge ${kind || String(text).toLowerCase()}`, text });
}

// The values of a form's named fields (checkboxes as booleans, empty fields left out).
export function formValues(form) {
  const out = {};
  for (const input of form.querySelectorAll('[name]')) {
    if (input.type === 'checkbox') out[input.name] = input.checked;
    else if (input.value.trim() !== '') out[input.name] = input.value.trim();
  }
  return out;
}

// --- formatting (display only) --------------------------------------------------------------
export function money(value) {
  if (value === null || value === undefined || value === '') return '-';
  const number = Number(value);
  if (!Number.isFinite(number)) return String(value);
  return number.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

export function signClass(value) {
  const number = Number(value);
  return number > 0 ? 'up' : number < 0 ? 'down' : '';
}

export function num(value, digits = 2) {
  if (value === null || value === undefined || value === '') return '-';
  const number = Number(value);
  return Number.isFinite(number) ? number.toFixed(digits) : String(value);
}

export function timeOfNs(ns) {
  if (ns === null || ns === undefined || ns === '' || Number(ns) === 0) return '-';
  return new Date(Number(ns) / 1e6).toLocaleString();
}

export function timeOf(iso) {
  if (!iso) return '-';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '-';
  const s = Math.abs(Math.round(seconds));
  const sign = seconds < 0 && s > 0 ? '-' : '';
  if (s < 120) return `${sign}${s} s`;
  if (s < 7200) return `${sign}${Math.floor(s / 60)} min`;
  if (s < 172800) return `${sign}${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${sign}${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
