// Copy buttons: <button class="copy" data-copy="#id"> copies the text of the element it names.
// The page works without this file; it only saves selecting text by hand.
(function () {
  "use strict";

  function fallbackCopy(text) {
    // navigator.clipboard needs a secure context; plain HTTP on a LAN address is not one.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (error) {
      ok = false;
    }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () {
        return fallbackCopy(text);
      });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy[data-copy]");
    if (!button) {
      return;
    }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) {
      return;
    }
    var label = button.textContent;
    copy(source.textContent).then(
      function () {
        button.textContent = "Copied";
        button.classList.add("copied");
      },
      function () {
        button.textContent = "Select and copy by hand";
      }
    ).then(function () {
      setTimeout(function () {
        button.textContent = label;
        button.classList.remove("copied");
      }, 1800);
    });
  });
})();
