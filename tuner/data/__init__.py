"""Data: sources (CBIS-DDSM, synthetic), DICOM decoding, preprocessing, patient-level splits,
the prepare pipeline and the shard stream read by trials."""
