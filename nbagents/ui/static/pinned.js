// "Keep in view": a compact summary of a job, pinned to the corner of the window while you work in other cells.
//
// The widget itself is a toggle button inside the inspector. When pinned, a small box (state, elapsed
// time, who is in the room, each audio track's level and frames, the latest data message, a Shut down
// button) is attached to the page itself with a fixed position, so scrolling the notebook does not move
// it. It hides while its notebook is not shown (another tab) and goes away with the output.

const STACK_ID = "nbagents-pinned-stack";

function stack() {
  let node = document.getElementById(STACK_ID);
  if (!node) {
    node = document.createElement("div");
    node.id = STACK_ID;
    node.style.cssText =
      "position:fixed;right:16px;bottom:16px;z-index:10000;display:flex;flex-direction:column;gap:6px;" +
      "align-items:flex-end;pointer-events:none";
    document.body.appendChild(node);
  }
  return node;
}

function text(tag, content, style) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (style) node.style.cssText = style;
  return node;
}

const STATE_COLORS = { starting: "#888", running: "#2ca02c", shutting_down: "#ff7f0e", succeeded: "#1f77b4" };

function render({ model, el }) {
  const toggle = document.createElement("button");
  toggle.className = "nbagents-pin-toggle jupyter-button";
  toggle.title = "keep a compact view of this job in the corner of the window while you work in other cells";
  el.appendChild(toggle);

  const box = document.createElement("div");
  box.className = "nbagents-pinned";
  box.style.cssText =
    "pointer-events:auto;background:var(--jp-layout-color0,#fff);color:var(--jp-ui-font-color0,#222);" +
    "border:1px solid #bbb;border-radius:6px;box-shadow:0 2px 8px rgba(0,0,0,.18);padding:6px 8px;" +
    "font:12px/1.35 system-ui,-apple-system,sans-serif;min-width:260px;max-width:460px";
  let attached = false;

  function draw() {
    const s = model.get("summary") || {};
    const pinned = model.get("pinned");
    toggle.textContent = pinned ? "Unpin" : "Keep in view";
    box.replaceChildren();
    const head = document.createElement("div");
    head.append(text("b", "nbagents job "), text("code", s.job_id || ""), text("span", " · "));
    const state = text("b", s.state || "", "color:" + (STATE_COLORS[s.state] || "#d62728"));
    state.className = "nbagents-pinned-state";
    head.append(state, text("span", " · " + (s.elapsed || 0).toFixed(0) + " s"));
    if (s.unresponsive) head.append(text("b", " · event loop unresponsive", "color:#d62728"));
    box.appendChild(head);
    box.appendChild(text("div", "room " + (s.room || "") + " · " + (s.participants || []).join(", "), "color:#555"));
    for (const t of s.tracks || []) {
      const row = document.createElement("div");
      row.className = "nbagents-pinned-track";
      row.style.cssText = "display:flex;align-items:center;gap:6px";
      const bar = text("span", "", "display:inline-block;width:90px;height:8px;background:#eee;border-radius:4px;overflow:hidden");
      const fill = text("span", "", "display:block;height:100%;background:#2ca02c;width:" + Math.min(100, t.rms * 300).toFixed(0) + "%");
      bar.appendChild(fill);
      const frames = text("span", String(t.frames));
      frames.className = "nbagents-pinned-frames";
      row.append(text("span", t.who, "min-width:90px"), bar, frames, text("span", "frames" + (t.active ? "" : " · ended"), "color:#777"));
      box.appendChild(row);
    }
    if (s.last_data) box.appendChild(text("div", "data: " + s.last_data, "color:#555;overflow:hidden;text-overflow:ellipsis;white-space:nowrap"));
    const actions = document.createElement("div");
    actions.style.cssText = "display:flex;gap:6px;margin-top:4px";
    const stop = text("button", "Shut down");
    stop.className = "nbagents-pinned-stop";
    stop.disabled = !["starting", "running"].includes(s.state);
    stop.addEventListener("click", () => model.send({ type: "stop" }));
    const unpin = text("button", "Unpin");
    unpin.addEventListener("click", () => { model.set("pinned", false); model.save_changes(); });
    actions.append(stop, unpin);
    box.appendChild(actions);
    place();
  }

  function place() {
    // shown while pinned and while this output's notebook is on screen (an ancestor with display:none hides it);
    // one box per job, whichever of its views (e.g. a second view of the output) is shown
    const visible = el.isConnected && el.offsetParent !== null;
    const want = model.get("pinned") && visible;
    const id = "nbagents-pinned-" + ((model.get("summary") || {}).job_id || "");
    if (want && !attached) {
      if (document.getElementById(id)) return; // another view of this job shows it
      box.id = id;
      stack().appendChild(box);
      attached = true;
    } else if (!want && attached) {
      box.remove();
      attached = false;
    }
  }

  toggle.addEventListener("click", () => { model.set("pinned", !model.get("pinned")); model.save_changes(); });
  model.on("change:summary", draw);
  model.on("change:pinned", draw);
  const timer = setInterval(place, 400);
  draw();
  return () => {
    clearInterval(timer);
    model.off("change:summary", draw);
    model.off("change:pinned", draw);
    box.remove();
  };
}

export default { render };
