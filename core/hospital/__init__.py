"""Hospital I/O: a PACS over DICOMweb as a source, results back as DICOM SR, Secondary Capture and FHIR."""
