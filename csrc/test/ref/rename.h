/* rename.h - the reference copy of the list compile (the .c files here: main before compile6,
 * 43bf080) under ref_ names, linked beside the library by the differential test
 * (csrc/test/image_diff.c). */
#ifndef GRAY_REF_RENAME_H
#define GRAY_REF_RENAME_H
#define gray_big_alloc ref_gray_big_alloc
#define gray_big_defer ref_gray_big_defer
#define gray_big_defer_release ref_gray_big_defer_release
#define gray_big_free ref_gray_big_free
#define gray_cidr_parse ref_gray_cidr_parse
#define gray_ids_find ref_gray_ids_find
#define gray_ids_index ref_gray_ids_index
#define gray_ids_index_bits ref_gray_ids_index_bits
#define gray_ids_parse ref_gray_ids_parse
#define gray_ids_room ref_gray_ids_room
#define gray_ids_sort ref_gray_ids_sort
#define gray_image_adopt ref_gray_image_adopt
#define gray_image_build ref_gray_image_build
#define gray_image_build_c ref_gray_image_build_c
#define gray_image_close ref_gray_image_close
#define gray_image_compile ref_gray_image_compile
#define gray_image_compile_c ref_gray_image_compile_c
#define gray_image_find_id ref_gray_image_find_id
#define gray_image_find_ip ref_gray_image_find_ip
#define gray_image_find_text ref_gray_image_find_text
#define gray_image_free_buf ref_gray_image_free_buf
#define gray_image_hash ref_gray_image_hash
#define gray_image_info ref_gray_image_info
#define gray_image_kind ref_gray_image_kind
#define gray_image_open ref_gray_image_open
#define gray_image_open_mem ref_gray_image_open_mem
#define gray_image_peek ref_gray_image_peek
#define gray_image_target ref_gray_image_target
#define gray_image_version ref_gray_image_version
#define gray_ipset_build ref_gray_ipset_build
#define gray_ipset_contains ref_gray_ipset_contains
#define gray_names_check ref_gray_names_check
#define gray_names_collect ref_gray_names_collect
#define gray_ranges_parse ref_gray_ranges_parse
#define gray_ranges_room ref_gray_ranges_room
#define gray_rangeset_build ref_gray_rangeset_build
#define gray_rangeset_find ref_gray_rangeset_find
#define gray_rangeset_find_text ref_gray_rangeset_find_text
#define gray_rangeset_index_len ref_gray_rangeset_index_len
#define gray_target_name_ok ref_gray_target_name_ok
#define gray_write_all ref_gray_write_all
#endif
