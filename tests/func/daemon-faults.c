/* SPDX-License-Identifier: MIT */
/* Description: placeholder (filled below). */
int main(void) { return 77; }
