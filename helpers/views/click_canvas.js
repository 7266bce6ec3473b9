// The click-to-prompt canvas (an anywidget ES module): an <img> that reports mouse-down/up
// pairs in the image's own pixels, dims itself while Python answers, and keeps the
// browser's and JupyterLab's right-click menus away.
function render({ model, el }) {
  el.classList.add("segcourse-canvas");
  // keep JupyterLab's own right-click menu away from the image
  el.setAttribute("data-jp-suppress-context-menu", "");
  const img = document.createElement("img");
  img.draggable = false;
  img.style.cursor = "crosshair";
  img.style.maxWidth = "100%";
  img.style.userSelect = "none";
  // busy: dimmed, a progress cursor and a note, from the click until Python has answered
  const note = document.createElement("div");
  note.textContent = "working…";
  note.className = "segcourse-busy-note";
  note.style.cssText = "position:absolute;left:6px;top:6px;padding:2px 6px;border-radius:3px;"
    + "background:rgba(0,0,0,.65);color:#fff;font:12px sans-serif;display:none";
  el.style.position = "relative";
  const busy = (on) => {
    img.style.opacity = on ? "0.55" : "1";
    img.style.cursor = on ? "progress" : "crosshair";
    note.style.display = on ? "block" : "none";
  };
  const show = () => { img.src = model.get("src"); };
  show();
  model.on("change:src", show);
  model.on("change:busy", () => busy(model.get("busy")));
  const at = (e) => {
    const r = img.getBoundingClientRect();
    return [
      (e.clientX - r.left) * img.naturalWidth / r.width,
      (e.clientY - r.top) * img.naturalHeight / r.height,
    ];
  };
  let down = null;
  img.addEventListener("contextmenu", (e) => { e.preventDefault(); e.stopPropagation(); });
  img.addEventListener("mousedown", (e) => {
    e.preventDefault();
    down = { p: at(e), button: e.button, shift: e.shiftKey };
  });
  img.addEventListener("mouseup", (e) => {
    if (!down) return;
    const p = at(e);
    busy(true);  // at once, before the kernel has even received the click
    model.send({
      kind: "pointer", x0: down.p[0], y0: down.p[1], x1: p[0], y1: p[1],
      button: down.button, shift: down.shift || e.shiftKey,
    });
    down = null;
  });
  el.appendChild(img);
  el.appendChild(note);
}
export default { render };
