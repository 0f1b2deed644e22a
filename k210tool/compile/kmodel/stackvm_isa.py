"""The stackvm instruction set of nncase v1.9.0, as tables.

Restated from nncase v1.9.0 ``include/nncase/runtime/stackvm/opcode.h`` (opcode and tensor-function
numbers, generated there by ``tools/stackvm_gen/IsaGen``) and ``include/nncase/codegen/stackvm/op_writer.h``
(the operands each instruction writes, in order, packed little-endian with no padding). Enum operands are
written as one byte. These numbers changed across nncase 1.x releases while the kmodel version stayed 5,
so this table decodes only bytecode written by nncase 1.9.

Formats are ``struct`` codes: B u8, H u16, i i32, I u32, f f32, q i64, ? bool.
"""

from __future__ import annotations

NNCASE_VERSION = "1.9.0"
TENSOR = 0x5E  # the opcode that introduces a u16 tensor-function id

# opcode -> name, in opcode order 0x00..0x5D (0x5E is TENSOR).
OPCODE_NAMES: tuple[str, ...] = tuple("""
nop ldnull ldc_i4 ldc_i4_0 ldc_i4_1 ldc_r4 ldind_i1 ldind_i2 ldind_i4 ldind_i ldind_u1 ldind_u2
ldind_u4 ldind_u ldind_br2 ldind_r4 stind_i1 stind_i2 stind_i4 stind_i stind_br2 stind_r4 lea_gp
lea_buffer ldelem_i1 ldelem_i2 ldelem_i4 ldelem_i ldelem_u1 ldelem_u2 ldelem_u4 ldelem_u ldelem_br2
ldelem_r4 stelem_i1 stelem_i2 stelem_i4 stelem_i stelem_br2 stelem_r4 ldarg ldarg_0 ldarg_1 ldarg_2
ldarg_3 ldarg_4 ldarg_5 dup pop stshape stpaddings neg add sub mul div div_u rem rem_u and or xor
not shl shr shr_u clt clt_u cle cle_u ceq cge cge_u cgt cgt_u cne conv_i1 conv_i2 conv_i4 conv_i
conv_u1 conv_u2 conv_u4 conv_u conv_br2 conv_r4 br br_true br_false ret call ecall throw break
""".split())

# Instructions with operands: name -> (format, operand names).
OPERANDS: dict[str, tuple[str, str]] = {
    "ldc_i4": ("i", "imm"), "ldc_r4": ("f", "imm"), "lea_gp": ("Bi", "gpid offset"),
    "lea_buffer": ("BBI", "location subres_id offset"), "ldarg": ("I", "index"),
    "stshape": ("BB", "rshape rank"), "stpaddings": ("BB", "rpaddings rank"), "br": ("i", "target"),
    "br_true": ("i", "target"), "br_false": ("i", "target"), "call": ("Bi", "args target"),
    "ecall": ("B", "args"),
}

# tensor function id -> (name, operand format, operand names). Ids 0x05 (clamp), 0x07 (conv2d_transpose),
# 0x0F (logistic) and 0x21 (take) are declared in 1.9 but have no writer, so they never appear.
TENSOR_FUNCTIONS: dict[int, tuple[str, str, str]] = {
    0x00: ("batch_to_space", "BBBBBB", "datatype rshape_src rstride_src rstride_dest rshape_block rpad_crops"),
    0x01: ("binary", "BBBBBBBBff", "datatype rshape_src1 rstride_src1 rshape_src2 rstride_src2 rshape_dest rstride_dest binary_op fused_clamp_low fused_clamp_high"),
    0x02: ("broadcast", "BBBBB", "datatype rshape_src rstride_src rshape_dest rstride_dest"),
    0x03: ("call", "IHBB", "function_id module_id num_src num_dst"),
    0x04: ("compare", "BBBBBBBB", "datatype rshape_src1 rstride_src1 rshape_src2 rstride_src2 rshape_dest rstride_dest compare_op"),
    0x06: ("conv2d", "BBBBBBBHHHHHff", "datatype rshape_src rstride_src rshape_kernel rstride_kernel rstride_bias rstride_dest groups stride_h stride_w dilation_h dilation_w fused_clamp_low fused_clamp_high"),
    0x08: ("convert", "BBBBB", "in_datatype dst_datatype rshape_src rstride_src rstride_dest"),
    0x09: ("copy", "BBBB", "datatype rshape rstride_src rstride_dest"),
    0x0A: ("cumsum", "BBi??", "datatype rshape_src axis exclusive reverse"),
    0x0B: ("dequantize", "BBBBB", "in_datatype dst_datatype rshape_src rstride_src rstride_dest"),
    0x0C: ("gather", "BBBBBBB", "datatype rshape_src rshape_dest rstride_src rstride_dest rshape_indices axis"),
    0x0D: ("gather_nd", "BBBBBBB", "datatype rshape_src rshape_dest rstride_src rstride_dest rshape_indices batch_dims"),
    0x0E: ("hardmax", "BBBi", "datatype rshape_src rstride_src axis"),
    0x10: ("lut1d", "BBBBH", "datatype rshape_src rstride_src rstride_dest table_len"),
    0x11: ("matmul", "BBBBBBff", "rshape_src1 rstride_src1 rshape_src2 rstride_src2 rshape_dest rstride_dest fused_clamp_low fused_clamp_high"),
    0x12: ("onehot", "BBBBBB", "datatype rshape_indices rshape_dest rstride_dest axis onehot_mode"),
    0x13: ("pad", "BBBBBB", "datatype rshape_src rstride_src rstride_dest rpaddings pad_mode"),
    0x14: ("quantize", "BBBBB", "in_datatype dst_datatype rshape_src rstride_src rstride_dest"),
    0x15: ("random_normal", "BBfff", "datatype_dest rshape_dest mean std seed"),
    0x16: ("random_uniform", "BBfff", "datatype_dest rshape_dest low high seed"),
    0x17: ("reduce", "BBBBBB?", "datatype rshape_src rstride_src rstride_dest reduce_op rshape_axis keep_dims"),
    0x18: ("reduce_arg", "BBBBBBB??", "datatype_src rshape_src rstride_src datatype_dest rstride_dest reduce_arg_op rshape_axis keep_dims select_last_idx"),
    0x19: ("reduce_prod", "BBBBB?", "datatype rshape_src rstride_src rstride_dest rshape_axes keep_dims"),
    0x1A: ("reduce_window2d", "BBBBBHHHHHHff", "datatype reduce_op rshape_src rstride_src rstride_dest filter_h filter_w stride_h stride_w dilation_h dilation_w fused_clamp_low fused_clamp_high"),
    0x1B: ("resize_image", "BBBB??B", "datatype rshape_src rstride_src rstride_dest align_corners half_pixel_centers image_resize_mode"),
    0x1C: ("roi_align", "BBBBfq", "datatype rshape_src rshape_dest mode spatial_scale sampling_ratio"),
    0x1D: ("sigmoid", "BBBB", "datatype rshape_src rstride_src rstride_dest"),
    0x1E: ("slice", "BBBBBBB", "datatype rshape_src rstride_src rstride_dest rbegins rends rstrides"),
    0x1F: ("softmax", "BBBBif", "datatype rshape_src rstride_src rstride_dest axis beta"),
    0x20: ("space_to_batch", "BBBBBB", "datatype rshape_src rstride_src rstride_dest rshape_block rpad_crops"),
    0x22: ("ternary", "BBBBBBBB", "datatype rshape_src1 rstride_src1 rshape_src2 rstride_src2 rshape_src3 rstride_src3 rstride_dest"),
    0x23: ("topk", "BBBBBBBqi??", "datatype rshape_src rstride_src rshape_dest1 rstride_dest1 rshape_dest2 rstride_dest2 k axis largest sorted"),
    0x24: ("transpose", "BBBBB", "datatype rshape_src rstride_src rstride_dest rshape_perm"),
    0x25: ("trilu", "BB?q", "datatype rshape_src upper k"),
    0x26: ("unary", "BBBBB", "datatype rshape_src rstride_src rstride_dest unary_op"),
    0x27: ("gru", "BBB?", "input_shape_src w_shape_src direction linear_before_reset"),
    0x28: ("tflite_detection_postprocess", "BBBiii?ffiffff", "box_shape_src score_shape_src anchor_shape_src max_detections max_classes_per_detection detections_per_class use_regular_non_max_suppression nms_score_threshold nms_iou_threshold num_classes y_scale x_scale h_scale w_scale"),
    0x29: ("layer_normalization", "BBif", "datatype input_shape axis epsilon"),
    0x2A: ("compress", "BBf", "input_shape_src condition_shape_src axis"),
    0x2B: ("gather_elements", "BBi", "input_shape_src indices_shape_src axis"),
}
