// omgate console: the one script. Every <time datetime="...Z"> is written in UTC by the
// server; this rewrites its text to the browser's local time, in the same format
// (YYYY-MM-DD HH:MM and the zone's name), and leaves its title: the UTC time on hover.
// It reads only the datetime attributes and sets only text (no markup, no requests), so
// the Content-Security-Policy allows it alone: script-src 'self' with Trusted Types
// required (and no policy allowed).
"use strict";
(() => {
  const two = (number) => String(number).padStart(2, "0");
  const zone = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" });
  for (const element of document.querySelectorAll("time[datetime]")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) {
      continue;
    }
    const name = zone.formatToParts(moment).find((part) => part.type === "timeZoneName");
    element.textContent = `${moment.getFullYear()}-${two(moment.getMonth() + 1)}-` +
      `${two(moment.getDate())} ${two(moment.getHours())}:${two(moment.getMinutes())}` +
      (name ? ` ${name.value}` : "");
  }
})();
