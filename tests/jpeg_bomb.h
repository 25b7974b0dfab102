/* jpeg_bomb.h: crafted but valid JPEGs whose decoding costs far more than
 * their size, for the image and hostile suites. */
#ifndef JPEG_BOMB_H
#define JPEG_BOMB_H

#include <stdio.h> /* before jpeglib.h */
#include <stdlib.h>

#include <jpeglib.h>

/* A progressive JPEG of w x h zero pixels (comps 1 gray, 3 RGB or 4 CMYK;
 * arith: arithmetic coding) whose scans each revisit every block of their
 * component: a DC scan, then one scan per coefficient, component and bit
 * plane, up to nscans in all. All-zero pixels keep the entropy data tiny.
 * Returns malloc'd bytes (free()), *len their size. */
__attribute__((unused)) static unsigned char *t_scan_heavy_jpeg(int w, int h, int comps, int arith,
                                                                int nscans, size_t *len) {
    static jpeg_scan_info sc[1 + 4 * 63 * 8];
    int n = 0;
    sc[n++] = (jpeg_scan_info){comps, {0, 1, 2, 3}, 0, 0, 0, 0};
    for (int k = 1; k < 64 && n < nscans; k++)
        for (int c = 0; c < comps && n < nscans; c++)
            for (int al = 7; al >= 0 && n < nscans; al--)
                sc[n++] = (jpeg_scan_info){1, {c, 0, 0, 0}, k, k, al == 7 ? 0 : al + 1, al};
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *out = NULL;
    unsigned long outlen = 0;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &outlen);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&c);
    c.arith_code = arith ? TRUE : FALSE;
    c.scan_info = sc;
    c.num_scans = n;
    jpeg_start_compress(&c, TRUE);
    unsigned char *row = calloc((size_t)w * comps, 1);
    while (c.next_scanline < c.image_height) {
        JSAMPROW rp = row;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    *len = outlen;
    return out;
}

#endif
