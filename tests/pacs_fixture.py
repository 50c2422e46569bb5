"""A real PACS for tests: Debian's Orthanc with its DICOMweb plugin, on loopback, in a temporary folder.

`running_orthanc(folder)` writes a JSON configuration (DICOMweb on, the DICOM listener off, remote access
refused, storage and index in `folder`), picks a free port, starts `Orthanc`, waits until its REST API
answers and kills it on exit. Orthanc 1.10 has no option for the address it listens on, so a tiny
LD_PRELOAD library (compiled with the system C compiler into `folder`) rewrites its bind() to 127.0.0.1;
the fixture then checks in /proc/net/tcp that the port listens on loopback only. Without Orthanc, its
DICOMweb plugin or a C compiler the caller gets OrthancUnavailable with the reason, to skip on.

`dicom_film(...)` builds a DX film (a pydicom Dataset) from a 2-D uint8/uint16 array, with a patient,
a study and a view position.
"""

from __future__ import annotations

import contextlib
import glob
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*", "/usr/lib/orthanc/libOrthancDicomWeb.so*",
                "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*")
_LOOPBACK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in copy;
        memcpy(&copy, addr, sizeof copy);
        copy.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return real(fd, (const struct sockaddr *)&copy, sizeof copy);
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 copy;
        memcpy(&copy, addr, sizeof copy);
        copy.sin6_addr = in6addr_loopback;
        return real(fd, (const struct sockaddr *)&copy, sizeof copy);
    }
    return real(fd, addr, len);
}
"""


class OrthancUnavailable(RuntimeError):
    """Orthanc cannot run here; the message says why (for pytest.skip)."""


class Orthanc:
    """A running Orthanc: `url` (REST root) and `dicomweb` (the DICOMweb root)."""

    def __init__(self, port: int, process: subprocess.Popen, log: Path):
        self.port, self.process, self.log = port, process, log
        self.url = f"http://127.0.0.1:{port}"
        self.dicomweb = f"{self.url}/dicom-web"

    def upload(self, dataset) -> str:
        """Store one pydicom Dataset through Orthanc's REST API; returns its Orthanc id."""
        import io

        import requests

        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        response = requests.post(f"{self.url}/instances", data=buffer.getvalue(), timeout=30)
        response.raise_for_status()
        return response.json()["ID"]

    def instances_of(self, study_uid: str) -> list[dict]:
        """Orthanc's tags of every instance of a study (Orthanc's own REST API, not DICOMweb)."""
        import requests

        found = requests.post(f"{self.url}/tools/find", timeout=30, json={
            "Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}).json()
        return found

    def file_of(self, orthanc_id: str) -> bytes:
        import requests

        response = requests.get(f"{self.url}/instances/{orthanc_id}/file", timeout=30)
        response.raise_for_status()
        return response.content


def orthanc_requirements() -> tuple[str, str, str]:
    """(Orthanc binary, DICOMweb plugin, C compiler), or OrthancUnavailable naming what is missing."""
    binary = shutil.which("Orthanc") or next(iter(glob.glob("/usr/sbin/Orthanc")), None)
    if not binary:
        raise OrthancUnavailable("Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb)")
    plugins = [path for pattern in PLUGIN_GLOBS for path in sorted(glob.glob(pattern))]
    if not plugins:
        raise OrthancUnavailable("Orthanc's DICOMweb plugin is not installed (Debian: apt-get install "
                                 "orthanc-dicomweb)")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OrthancUnavailable("no C compiler to build the shim that keeps Orthanc on 127.0.0.1 (apt-get "
                                 "install gcc)")
    return binary, plugins[0], compiler


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:
                    addresses.add(address)
    return addresses


_LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}


@contextlib.contextmanager
def running_orthanc(folder: Path, timeout: float = 30.0):
    """Start Orthanc on 127.0.0.1 with its storage in `folder`; yield an Orthanc; kill it afterwards."""
    import requests

    binary, plugin, compiler = orthanc_requirements()
    folder = Path(folder)
    (folder / "db").mkdir(parents=True, exist_ok=True)
    (folder / "loopback.c").write_text(_LOOPBACK_SHIM)
    built = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(folder / "loopback.so"),
                            str(folder / "loopback.c"), "-ldl"], capture_output=True, text=True)
    if built.returncode:
        raise OrthancUnavailable(f"could not build the loopback shim: {built.stderr.strip()[:300]}")
    port = free_port()
    config = {
        "Name": "paru-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": port, "HttpServerEnabled": True, "DicomServerEnabled": False,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpThreadsCount": 8,
        "ConcurrentJobs": 1, "SaveJobs": False, "StorageCompression": False,
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False,
                                          "Host": "127.0.0.1", "Ssl": False},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    env = {"LD_PRELOAD": str(folder / "loopback.so"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    with open(log, "wb") as log_file:
        process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log_file,
                                   stderr=subprocess.STDOUT, env=env)
    server = Orthanc(port, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise OrthancUnavailable(f"Orthanc exited at start-up: {log.read_text()[-600:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{server.dicomweb}/studies", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise OrthancUnavailable(f"Orthanc did not answer within {timeout:.0f} s: {log.read_text()[-600:]}")
            time.sleep(0.05)
        addresses = listening_addresses(port)
        if not addresses or not addresses <= _LOOPBACK_HEX:
            raise RuntimeError(f"Orthanc listens on {addresses} for port {port}, not on loopback only")
        yield server
    finally:
        # Killed, not stopped: its storage and index are this fixture's own temporary folder, so nothing
        # needs Orthanc's orderly shutdown, which waits seconds for its HTTP threads.
        process.kill()
        process.wait()


def dicom_film(pixels: np.ndarray, *, patient_id: str = "PARU-TEST-001", patient_name: str = "Test^Patient",
               accession: str = "ACC-0001", view: str = "PA", modality: str = "DX", study_uid: str | None = None,
               series_uid: str | None = None, instance_number: int = 1, study_date: str = "20240131"):
    """A DX (or CR) film as a pydicom Dataset: MONOCHROME2, 8 or 16 bits from the array's dtype."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(pixels)
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = ("1.2.840.10008.5.1.4.1.1.1.1" if modality == "DX" else "1.2.840.10008.5.1.4.1.1.1")
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = series_uid or generate_uid()
    dataset.PatientID, dataset.PatientName = patient_id, patient_name
    dataset.PatientBirthDate, dataset.PatientSex = "19700101", "F"
    dataset.StudyDate, dataset.StudyTime, dataset.AccessionNumber = study_date, "101500", accession
    dataset.StudyID, dataset.ReferringPhysicianName, dataset.StudyDescription = "1", "", "XR CHEST"
    dataset.Modality, dataset.SeriesNumber, dataset.InstanceNumber = modality, 1, instance_number
    dataset.ViewPosition, dataset.BodyPartExamined, dataset.Manufacturer = view, "CHEST", "Test Modality"
    dataset.PatientOrientation = ["L", "F"] if view != "LL" else ["P", "F"]
    dataset.ImageType = ["ORIGINAL", "PRIMARY"]
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    dataset.BitsAllocated = bits
    dataset.BitsStored = 8 if bits == 8 else 12
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    return dataset


def synthetic_film(size: int = 256, seed: int = 0, bits: int = 12) -> np.ndarray:
    """A chest-film-like 2-D image (dark lungs in a bright body, ribs, noise) with `bits` significant bits."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    body = np.exp(-((cols - 0.5) ** 2) / 0.08)
    lungs = (np.exp(-(((cols - 0.32) ** 2) / 0.01 + ((rows - 0.5) ** 2) / 0.06))
             + np.exp(-(((cols - 0.68) ** 2) / 0.01 + ((rows - 0.5) ** 2) / 0.06)))
    ribs = 0.15 * (np.sin(rows * 40) > 0.6)
    image = 0.2 + 0.7 * body - 0.5 * lungs + ribs * lungs + rng.normal(0, 0.02, (size, size))
    top = 2 ** bits - 1
    return np.clip(image * top, 0, top).astype(np.uint8 if bits == 8 else np.uint16)
