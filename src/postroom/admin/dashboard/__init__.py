"""The dashboard page, its login page, script and style: plain HTML, JS and SVG, no build step."""
