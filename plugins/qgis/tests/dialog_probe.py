"""Opens one geoseg algorithm's dialog in the real QGIS desktop application (run as ``qgis --code dialog_probe.py``).

Driven by test_dialogs.py, one QGIS process per dialog so that a crash of QGIS fails one test. The JSON in the
environment variable GEOSEG_DIALOG_PROBE says what to do::

    {"plugin_root": ..., "algorithm": "geoseg:trainmodel", "active": "none" | "raster" | "vector",
     "raster": <path>, "vector": <path>, "screenshot": <png>, "result": <json>,
     "run": null | {"PARAM": value, ...}, "timeout_s": 240}

It adds the geoseg provider, loads the raster and the vector layer as the situation asks and makes one of them the
active layer, opens the algorithm's dialog through Processing's own GUI (``processing.createAlgorithmDialog``), lets
it paint, saves a screenshot, and with ``run`` sets those parameters and presses Run, waiting for the result. It then
writes what happened to ``result`` and leaves QGIS (``os._exit``, so the test sees QGIS's own fate up to there).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QTextBrowser
from qgis.utils import iface

CONFIG = json.loads(os.environ["GEOSEG_DIALOG_PROBE"])
RESULT: dict = {"steps": []}


def _write(code: int) -> None:
    RESULT["exit"] = code
    with open(CONFIG["result"], "w", encoding="utf-8") as fh:
        json.dump(RESULT, fh, indent=1)
    sys.stdout.flush()
    sys.stderr.flush()
    QgsProject.instance().setDirty(False)
    os._exit(code)


def _pump(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _step(text: str) -> None:
    RESULT["steps"].append(text)
    print(f"dialog_probe: {text}", flush=True)


def main() -> None:
    try:
        sys.path.insert(0, CONFIG["plugin_root"])
        import processing
        from processing.core.Processing import Processing

        Processing.initialize()
        from geoseg_qgis.provider import GeoSegProvider

        provider = GeoSegProvider()
        QgsApplication.processingRegistry().addProvider(provider)
        _step("provider added")
        raster = vector = None
        if CONFIG["active"] != "none":
            raster = QgsRasterLayer(CONFIG["raster"], "scene")
            vector = QgsVectorLayer(CONFIG["vector"], "label polygons", "ogr")
            assert raster.isValid() and vector.isValid()
            QgsProject.instance().addMapLayers([raster, vector])
            iface.setActiveLayer(raster if CONFIG["active"] == "raster" else vector)
            _pump(0.5)
            RESULT["active_layer"] = iface.activeLayer().name() if iface.activeLayer() else None
        _step(f"active layer: {RESULT.get('active_layer')}")
        dialog = processing.createAlgorithmDialog(CONFIG["algorithm"], {})
        if dialog is None:
            raise RuntimeError(f"no dialog for {CONFIG['algorithm']}")
        dialog.show()
        _pump(1.5)  # let every widget wrapper set its default and paint
        _step("dialog shown")
        dialog.grab().save(CONFIG["screenshot"], "PNG")
        RESULT["screenshot"] = CONFIG["screenshot"]
        RESULT["title"] = dialog.windowTitle()
        if CONFIG.get("run"):
            dialog.setParameters(CONFIG["run"])
            _pump(0.5)
            _step("parameters set; Run")
            dialog.runAlgorithm()
            deadline = time.monotonic() + float(CONFIG.get("timeout_s", 240))
            while not dialog.wasExecuted() and time.monotonic() < deadline:
                _pump(0.2)
                if dialog.results():
                    break
            _pump(1.0)
            RESULT["executed"] = bool(dialog.wasExecuted())
            RESULT["results"] = {k: str(v) for k, v in (dialog.results() or {}).items()}
            log = dialog.findChild(QTextBrowser, "txtLog")
            RESULT["log"] = log.toPlainText() if log is not None else ""
            RESULT["loaded_layers"] = sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())
            dialog.grab().save(CONFIG["screenshot"].replace(".png", "-after-run.png"), "PNG")
            _step("run finished")
        dialog.close()
        _pump(0.5)
        RESULT["alive"] = True
        _write(0)
    except Exception:
        RESULT["error"] = traceback.format_exc()
        _write(3)


QTimer.singleShot(0, main)
