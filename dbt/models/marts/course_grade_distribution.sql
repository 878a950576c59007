-- Grade distribution per course, in bands of var('grade_band_width') percentage points (100 and
-- above, i.e. extra credit, is one band): students by current course score (course_scores), and
-- graded submissions by score / points possible.
{% set width = var('grade_band_width') %}
with course_grades as (
    select course_id, current_score as score_percent
    from {{ ref('stg_course_scores') }}
    where current_score is not null
),

submission_grades as (
    select course_id, score_percent
    from {{ ref('int_submissions') }}
    where course_id is not null and score_percent is not null
),

students_per_band as (
    select
        course_id,
        least(greatest(floor(score_percent / {{ width }}) * {{ width }}, 0), 100)::integer as band_start,
        count(*) as students
    from course_grades
    group by 1, 2
),

submissions_per_band as (
    select
        course_id,
        least(greatest(floor(score_percent / {{ width }}) * {{ width }}, 0), 100)::integer as band_start,
        count(*) as graded_submissions
    from submission_grades
    group by 1, 2
),

bands as (
    select
        coalesce(st.course_id, su.course_id) as course_id,
        coalesce(st.band_start, su.band_start) as band_start,
        coalesce(st.students, 0) as students,
        coalesce(su.graded_submissions, 0) as graded_submissions
    from students_per_band as st
    full outer join submissions_per_band as su
        on su.course_id = st.course_id and su.band_start = st.band_start
)

select
    course_id,
    band_start,
    case when band_start >= 100 then '100+' else band_start || '-' || (band_start + {{ width }}) end as grade_band,
    students,
    round(students::numeric / nullif(sum(students) over (partition by course_id), 0), 4) as share_of_students,
    graded_submissions,
    round(graded_submissions::numeric / nullif(sum(graded_submissions) over (partition by course_id), 0), 4)
        as share_of_submissions
from bands
